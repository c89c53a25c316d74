"""What users install: an sdist and a wheel built from a clean copy of the source tree.

`make test` installs the package editable, so it never sees a module or data file that
packaging forgets. Here the sdist is built from the tracked (and untracked, not ignored)
files, the wheel from that sdist, as pip does for a user, and both are compared with the
source tree: every file under ``lm_eval_radsafe/``, ``tasks/`` and ``retrieval/``, at its
installed name (``tasks/`` -> ``lm_eval_radsafe/tasks/``, ``retrieval/`` ->
``lm_eval_radsafe/retrieval/``).
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from lm_eval_radsafe.compat import SUPPORTED

REPO = Path(__file__).resolve().parent.parent
# source folder -> installed folder
TREES = {"lm_eval_radsafe": "lm_eval_radsafe", "tasks": "lm_eval_radsafe/tasks", "retrieval": "lm_eval_radsafe/retrieval"}
NOT_SHIPPED_DIRS = {"__pycache__"}
NOT_SHIPPED_SUFFIXES = {".pyc", ".pyo"}
EXTRAS = {"report", "retrieval", "dense", "vllm", "demo", "test"}
BUILD_FILES = ["setup.cfg", "pyproject.toml", "README.md", "LICENSE"]


def copy_source(dest: Path) -> None:
    """The files a clone has: git's tracked and untracked-not-ignored files, else the tree
    without build outputs. Never build in place: a stale ``*.egg-info/SOURCES.txt`` would
    put files into the sdist that a clean clone lacks."""
    listed = None
    if shutil.which("git") and (REPO / ".git").exists():
        done = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=False
        )
        if done.returncode == 0:  # else (e.g. a checkout git refuses to read): copy the tree
            listed = [name for name in done.stdout.decode().split("\0") if name and (REPO / name).is_file()]
    if listed is None:
        ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "runs", "out")
        shutil.copytree(REPO, dest, ignore=ignore, dirs_exist_ok=True)  # dest exists (the caller made it)
        return
    for name in listed:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)


def build(hook: str, source: Path, out: Path) -> Path:
    """Run setuptools' PEP 517 ``hook`` (build_sdist / build_wheel) in ``source``."""
    code = f"import sys; from setuptools import build_meta as b; print(b.{hook}(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=source, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{hook} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return out / done.stdout.strip().splitlines()[-1]


def shipped(path: Path) -> bool:
    return not (NOT_SHIPPED_DIRS & set(path.parts) or path.suffix in NOT_SHIPPED_SUFFIXES)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Source copy, sdist member names, wheel member names and the wheel's metadata."""
    root = tmp_path_factory.mktemp("packaging")
    source, dist = root / "source", root / "dist"
    source.mkdir()
    dist.mkdir()
    copy_source(source)
    sdist = build("build_sdist", source, dist)
    with tarfile.open(sdist) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
        tar.extractall(root / "unpacked", **safe)
        top = f"{sdist.name.removesuffix('.tar.gz')}/"
        sdist_names = {m.name.removeprefix(top) for m in tar.getmembers() if m.isfile()}
    (unpacked,) = (root / "unpacked").iterdir()
    wheel = build("build_wheel", unpacked, dist)  # from the sdist, as pip does for a user
    with zipfile.ZipFile(wheel) as whl:
        wheel_names = set(whl.namelist())
        info = next(n.split("/")[0] for n in wheel_names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(whl.read(f"{info}/METADATA").decode())
        entry_points = configparser.ConfigParser()
        entry_points.read_string(whl.read(f"{info}/entry_points.txt").decode())
        top_level = whl.read(f"{info}/top_level.txt").decode().split()
    return {
        "source": source, "sdist": sdist_names, "wheel": wheel_names, "info": info,
        "metadata": metadata, "entry_points": entry_points, "top_level": top_level,
    }


def expected_install(source: Path) -> dict[str, str]:
    """Installed name -> source path of every file of the three trees."""
    files = {}
    for tree, installed in TREES.items():
        for path in sorted((source / tree).rglob("*")):
            rel = path.relative_to(source / tree)
            if path.is_file() and shipped(rel):
                files[f"{installed}/{rel.as_posix()}"] = f"{tree}/{rel.as_posix()}"
    return files


def test_the_source_tree_is_what_we_think(built: dict) -> None:
    """Guards the comparison itself: the trees hold modules, task YAMLs and data."""
    names = expected_install(built["source"])
    for needed in [
        "lm_eval_radsafe/analysis/report.py",
        "lm_eval_radsafe/tasks/radsafe200/utils.py",
        "lm_eval_radsafe/tasks/radsafe200/_radsafe_base_yaml",
        "lm_eval_radsafe/tasks/radsafe200/radsafe_demo_closed_book.yaml",
        "lm_eval_radsafe/retrieval/retrievers.py",
        "lm_eval_radsafe/templates/system.j2",
        "lm_eval_radsafe/data/demo/radsafe_demo.jsonl",
        "lm_eval_radsafe/data/demo/README.md",
        "lm_eval_radsafe/data/demo_corpus/radsafe_demo_corpus.jsonl",
        "lm_eval_radsafe/data/model_cards_example.csv",
    ]:
        assert needed in names


def test_wheel_ships_every_module_and_data_file_and_nothing_else(built: dict) -> None:
    expected = set(expected_install(built["source"]))
    in_wheel = {n for n in built["wheel"] if not n.startswith(built["info"] + "/")}
    missing, extra = sorted(expected - in_wheel), sorted(in_wheel - expected)
    assert not missing, "in the source tree, not in the wheel (setup.cfg packages/package_data):\n" + "\n".join(missing)
    assert not extra, "in the wheel, not in the source tree:\n" + "\n".join(extra)


def test_wheel_installs_one_top_level_package(built: dict) -> None:
    """tasks/ and retrieval/ live under the package, never as bare modules on sys.path."""
    assert built["top_level"] == ["lm_eval_radsafe"]
    assert {n.split("/")[0] for n in built["wheel"]} == {"lm_eval_radsafe", built["info"]}


def test_sdist_holds_what_a_wheel_build_needs(built: dict) -> None:
    """Every source file of the package plus the build configuration (the wheel above is
    built from this sdist; this names what is missing if that build ever goes wrong)."""
    needed = set(expected_install(built["source"]).values()) | set(BUILD_FILES)
    missing = sorted(needed - built["sdist"])
    assert not missing, "not in the sdist:\n" + "\n".join(missing)


def test_wheel_metadata(built: dict) -> None:
    metadata = built["metadata"]
    assert metadata["Name"] == "lm-eval-radsafe"
    assert set(metadata.get_all("Provides-Extra")) >= EXTRAS
    # the wheel accepts the lm-eval range the compatibility check supports, not one pin
    harness = [Requirement(r) for r in metadata.get_all("Requires-Dist") if r.startswith("lm-eval[")]
    assert harness and all(r.specifier == SpecifierSet(",".join(SUPPORTED)) for r in harness)
    assert built["entry_points"]["console_scripts"]["radsafe"].strip() == "lm_eval_radsafe.cli:main"
    assert "radsafe_demo_closed_book" in metadata.get_payload()  # README as the long description
