"""Evidence building for the retrieval conditions: corpus, chunking, retrievers, packing,
prepared datasets. Installed as ``lm_eval_radsafe.retrieval``."""
