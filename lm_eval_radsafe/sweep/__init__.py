"""Sweeps: a grid of models x conditions x regimes, planned as cells with content
addresses, run locally or as SLURM job arrays, resumable, handed to ``radsafe report``.

* :mod:`~lm_eval_radsafe.sweep.spec`: the sweep file, checked field by field;
* :mod:`~lm_eval_radsafe.sweep.cells`: cells, their keys, folders and records;
* :mod:`~lm_eval_radsafe.sweep.run`: serving a model and running its cells (``radsafe eval``);
* :mod:`~lm_eval_radsafe.sweep.slurm`: one array task per model through ``sbatch``;
* :mod:`~lm_eval_radsafe.sweep.status`: where the sweep stands, and the hand-off to the report.
"""
