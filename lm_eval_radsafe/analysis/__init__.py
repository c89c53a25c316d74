"""Analysis of many lm-eval runs: tables with CIs, paired tests, scaling, worst cases, report."""
