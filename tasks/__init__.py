"""Task folders shipped inside the lm_eval_radsafe package (lm_eval_radsafe.tasks)."""
