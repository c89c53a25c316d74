"""The SLURM executor: one array task per model, through ``sbatch``.

Models that ask for the same resources share one job array (``--array=0,2,5``: their
indices in the sweep file); each array task runs ``radsafe sweep run-model --sweep FILE
--index $SLURM_ARRAY_TASK_ID``, the same entry point a job script of one's own can call.
Scripts and the tasks' logs go to ``<output>/.slurm/``. Models whose cells are all done
are not submitted.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lm_eval_radsafe.sweep.spec import Resources, Sweep, SweepError

logger = logging.getLogger(__name__)

SLURM_FOLDER = ".slurm"


@dataclass(frozen=True)
class ArrayJob:
    """One job array: the models' indices, their shared resources and the script."""

    indices: tuple[int, ...]
    resources: Resources
    script: str
    path: Path


def _directives(sweep: Sweep, indices: tuple[int, ...], resources: Resources, logs: Path) -> list[str]:
    name = f"radsafe-{sweep.path.stem}"
    lines = [f"--job-name={name}", f"--array={','.join(map(str, indices))}", f"--time={resources.time}",
             f"--output={logs / '%A_%a.out'}", "--ntasks=1"]
    if resources.gpus:
        lines.append(f"--gres=gpu:{resources.gpus}")
    if resources.cpus:
        lines.append(f"--cpus-per-task={resources.cpus}")
    if resources.mem:
        lines.append(f"--mem={resources.mem}")
    if resources.partition:
        lines.append(f"--partition={resources.partition}")
    lines += list(resources.sbatch)
    return [f"#SBATCH {line}" for line in lines]


def array_jobs(sweep: Sweep, indices: list[int]) -> list[ArrayJob]:
    """The job arrays that run the models at ``indices``: one per distinct set of resources."""
    groups: dict[Resources, list[int]] = {}
    for index in indices:
        groups.setdefault(sweep.models[index].resources, []).append(index)
    folder = (sweep.output / SLURM_FOLDER).resolve()
    sweep_file = sweep.path.resolve()
    jobs = []
    for number, (resources, members) in enumerate(groups.items()):
        command = [sys.executable, "-m", "lm_eval_radsafe.cli", "sweep", "run-model", "--sweep", str(sweep_file),
                   "--index", "$SLURM_ARRAY_TASK_ID"]
        script = "\n".join([
            "#!/bin/bash",
            *_directives(sweep, tuple(members), resources, folder),
            "# one task per model of the sweep file: its cells run one after another, done ones are skipped",
            "set -euo pipefail",
            " ".join(shlex.quote(part) if not part.startswith("$") else f'"{part}"' for part in command),
            "",
        ])
        jobs.append(ArrayJob(tuple(members), resources, script, folder / f"array-{number}.sh"))
    return jobs


def submit(jobs: list[ArrayJob]) -> list[str]:
    """Write each script and submit it with ``sbatch``; the job ids."""
    ids = []
    for job in jobs:
        job.path.parent.mkdir(parents=True, exist_ok=True)
        job.path.write_text(job.script, encoding="utf-8")
        try:
            done = subprocess.run(["sbatch", "--parsable", str(job.path)], capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise SweepError("sbatch is not on PATH: run this on a SLURM login node, or use --executor local") from None
        if done.returncode != 0:
            raise SweepError(f"sbatch refused {job.path}: {done.stderr.strip() or done.stdout.strip()}")
        job_id = done.stdout.strip().split(";")[0]
        logger.info("submitted job array %s (models %s): %s", job_id, ",".join(map(str, job.indices)), job.path)
        ids.append(job_id)
    return ids
