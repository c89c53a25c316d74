"""`radsafe sweep run --executor slurm` on a real SLURM cluster: two models of scripted
servers, one array task each, both cells of each done, then nothing left to submit.

Runs where ``RADSAFE_SLURM_TEST=1`` and a cluster answers (``scripts/slurm_local.sh``
starts a single-node one on this machine; ``.ci/run`` does both)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from fake_openai_server import JsonServer, load_answers, scripted_reply
from test_sweep import sweep_file

from lm_eval_radsafe.assets import demo_items_path
from lm_eval_radsafe.cli import main
from lm_eval_radsafe.sweep.cells import DONE
from lm_eval_radsafe.sweep.spec import load_sweep
from lm_eval_radsafe.sweep.status import sweep_states

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("RADSAFE_SLURM_TEST") != "1" or shutil.which("sbatch") is None,
        reason="needs a SLURM cluster (bash scripts/slurm_local.sh) and RADSAFE_SLURM_TEST=1",
    ),
]


def _queued(job_ids: list[str]) -> list[str]:
    done = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(job_ids)], capture_output=True, text=True, check=False)
    return [line for line in done.stdout.splitlines() if line.strip()]


def test_a_slurm_sweep_runs_one_array_task_per_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RADSAFE_RESPONSE_CACHE", str(tmp_path / "responses.sqlite"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with JsonServer(scripted_reply(load_answers(demo_items_path()), correct=0.7)) as server:
        path = sweep_file(tmp_path, server.url, limit=2)
        assert main(["sweep", "run", str(path), "--executor", "slurm"]) == 0
        out = capsys.readouterr().out
        assert "submitted 1 job array(s) for 2 model(s)" in out
        job_id = out.split(": ", 1)[1].split(";")[0]
        deadline = time.monotonic() + 600
        while _queued([job_id]) and time.monotonic() < deadline:
            time.sleep(2)
        assert not _queued([job_id]), "the array did not finish in 10 minutes"
    logs = sorted((tmp_path / "runs" / ".slurm").glob(f"{job_id}_*.out"))
    assert [log.name for log in logs] == [f"{job_id}_0.out", f"{job_id}_1.out"]  # one array task per model
    states = sweep_states(load_sweep(path))
    assert [s.state for s in states] == [DONE] * 4, "\n".join(log.read_text()[-1500:] for log in logs)
    assert main(["sweep", "run", str(path), "--executor", "slurm"]) == 0
    assert "nothing to do: all 4 cells are done" in capsys.readouterr().out
