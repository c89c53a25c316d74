"""The sweep file: what to run (family, dataset, prepared evidence, conditions, regimes)
on which models (card, how each is served, its cluster resources) and where to write.

A sweep file is YAML::

    family: radsafe200            # or radsafe_demo
    dataset: my_items.jsonl       # radsafe200: a path or hub id; radsafe_demo: the bundled set
    prepared: prepared/           # from `radsafe prepare`: retrieval, agentic, long context
    conditions: [closed_book, clean_evidence, rag_top5]
    regimes: [greedy, sc]
    output: sweep-runs/
    models:
      - name: qwen2.5-7b
        card: {family: Qwen2.5, parameters: 7, context_window: 32768}
        serve: {kind: vllm-server, model: Qwen/Qwen2.5-7B-Instruct, args: [--max-model-len, "32768"]}
        resources: {gpus: 1, time: "04:00:00", partition: gpu}

Every field is checked when the file is read; an error names the file, the field (as
``models[1].serve.kind``) and the value. Keys live in the environment only: an endpoint
names the variable that holds its key (``key_env``), never the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: how a model is served: an OpenAI-compatible URL that exists, a `vllm serve` the sweep
#: starts on the node, vLLM's offline engine, or transformers in process
SERVE_KINDS = ("endpoint", "vllm-server", "vllm", "hf")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SLURM_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$")


class SweepError(ValueError):
    """A sweep file that cannot be run as written; the message names file, field and value."""


@dataclass(frozen=True)
class Serve:
    """How one model is served (``kind`` of :data:`SERVE_KINDS`) and its arguments."""

    kind: str
    #: endpoint: served model name; vllm-server: the model `vllm serve` loads
    model: str | None = None
    #: endpoint: the server's OpenAI-compatible root (``http://host:8000/v1``)
    base_url: str | None = None
    #: endpoint: the environment variable holding the key (default OPENAI_API_KEY, may be unset)
    key_env: str = "OPENAI_API_KEY"
    #: vllm / hf: the model (hub id or folder)
    pretrained: str | None = None
    #: hf: a GGUF file in ``pretrained``
    gguf_file: str | None = None
    #: vllm: engine sizes and window
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    max_model_len: int | None = None
    #: vllm-server: the port (default: a free one); seconds to wait for /health
    port: int | None = None
    startup_timeout: float = 1800.0
    #: endpoint / vllm-server: requests in flight; seconds each request may take, retries included
    num_concurrent: int = 8
    retry_budget: float | None = None
    #: vllm-server: arguments after `vllm serve MODEL`; vllm / hf: extra lm-eval model_args
    args: tuple[str, ...] = ()
    model_args: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Resources:
    """What one array task asks of the cluster (``sbatch`` options beyond these in ``sbatch``)."""

    gpus: int = 0
    cpus: int | None = None
    mem: str | None = None
    time: str = "24:00:00"
    partition: str | None = None
    sbatch: tuple[str, ...] = ()


@dataclass(frozen=True)
class SweepModel:
    """One model of a sweep: its folder name, card, serving and resources."""

    name: str
    card: dict[str, Any]
    serve: Serve
    resources: Resources


@dataclass(frozen=True)
class Sweep:
    """A checked sweep file; relative paths are resolved against the file's folder."""

    path: Path
    family: str
    dataset: str
    prepared: Path | None
    conditions: tuple[str, ...]
    regimes: tuple[str, ...]
    output: Path
    models: tuple[SweepModel, ...]
    limit: int | None = None
    apply_chat_template: bool = True
    gen_kwargs: str | None = None
    seed: int | None = None

    def model(self, index: int) -> SweepModel:
        """The model at ``index`` (an array task's index); SweepError when there is none."""
        if not 0 <= index < len(self.models):
            raise SweepError(f"{self.path}: no model at index {index} (the sweep has {len(self.models)}: 0-{len(self.models) - 1})")
        return self.models[index]


class _Fields:
    """Reads one mapping of the file, naming each field it refuses."""

    def __init__(self, path: Path, where: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise SweepError(f"{path}: {where or 'the file'}: expected a mapping, got {type(data).__name__} {data!r}")
        self.path, self.where, self.data = path, where, data
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, reason: str) -> SweepError:
        return SweepError(f"{self.path}: {self.name(key)}: {reason}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.fail(key, "missing")
            return default
        value = self.data[key]
        if kind in (int, float) and isinstance(value, bool):
            raise self.fail(key, f"expected a number, got {value!r}")
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise self.fail(key, f"expected {names}, got {type(value).__name__} {value!r}")
        return value

    def positive(self, key: str, default: Any = None, kind: type = int) -> Any:
        value = self.get(key, kind, default)
        if value is not None and value <= 0:
            raise self.fail(key, f"must be positive, got {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.get(key, (list, str), [])
        values = [value] if isinstance(value, str) else value
        bad = [v for v in values if not isinstance(v, (str, int, float)) or isinstance(v, bool)]
        if bad:
            raise self.fail(key, f"expected strings, got {bad[0]!r}")
        return tuple(str(v) for v in values)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], f"unknown field (known: {', '.join(sorted(self.used))})")


def _serve(path: Path, where: str, data: Any) -> Serve:
    f = _Fields(path, where, data)
    kind = f.get("kind", str, required=True)
    if kind not in SERVE_KINDS:
        raise f.fail("kind", f"{kind!r} is not one of {', '.join(SERVE_KINDS)}")
    model_args = f.get("model_args", dict, {})
    for key, value in model_args.items():
        if not isinstance(value, (str, int, float, bool)):
            raise f.fail(f"model_args.{key}", f"expected a string or number, got {value!r}")
        if "," in str(value) or "=" in str(key):
            raise f.fail(f"model_args.{key}", f"{value!r}: lm-eval's model_args cannot hold ',' in a value or '=' in a key")
    serve = Serve(
        kind=kind,
        model=f.get("model", str),
        base_url=f.get("base_url", str),
        key_env=f.get("key_env", str, "OPENAI_API_KEY"),
        pretrained=f.get("pretrained", str),
        gguf_file=f.get("gguf_file", str),
        tensor_parallel_size=f.positive("tensor_parallel_size", 1),
        data_parallel_size=f.positive("data_parallel_size", 1),
        max_model_len=f.positive("max_model_len"),
        port=f.positive("port"),
        startup_timeout=f.positive("startup_timeout", 1800.0, float),
        num_concurrent=f.positive("num_concurrent", 8),
        retry_budget=f.positive("retry_budget", None, float),
        args=f.strings("args"),
        model_args=tuple((str(k), str(v)) for k, v in model_args.items()),
    )
    f.finish()
    needs = {"endpoint": ("model", "base_url"), "vllm-server": ("model",), "vllm": ("pretrained",), "hf": ("pretrained",)}[kind]
    for key in needs:
        if getattr(serve, key) is None:
            raise f.fail(key, f"missing (a {kind} model needs {' and '.join(needs)})")
    allowed = {
        "endpoint": {"model", "base_url", "key_env", "num_concurrent", "retry_budget", "model_args"},
        "vllm-server": {"model", "port", "startup_timeout", "num_concurrent", "retry_budget", "args"},
        "vllm": {"pretrained", "tensor_parallel_size", "data_parallel_size", "max_model_len", "model_args"},
        "hf": {"pretrained", "gguf_file", "model_args"},
    }[kind]
    extra = sorted(key for key in f.data if key != "kind" and key not in allowed and f.data[key] is not None)
    if extra:
        raise f.fail(extra[0], f"not a field of a {kind} model (its fields: {', '.join(sorted(allowed))})")
    if serve.base_url is not None and not re.match(r"^https?://[^/\s]+", serve.base_url):
        raise f.fail("base_url", f"{serve.base_url!r} is not an http(s) URL")
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", serve.key_env):
        raise f.fail("key_env", f"{serve.key_env!r} is not an environment variable name (the key itself never goes in the file)")
    return serve


def _resources(path: Path, where: str, data: Any) -> Resources:
    f = _Fields(path, where, data if data is not None else {})
    time = str(f.get("time", (str, int), "24:00:00"))
    if not _SLURM_TIME.match(time):
        raise f.fail("time", f"{time!r} is not a SLURM time (minutes, HH:MM:SS or D-HH:MM:SS)")
    resources = Resources(
        gpus=f.get("gpus", int, 0),
        cpus=f.positive("cpus"),
        mem=str(f.get("mem", (str, int))) if f.get("mem", (str, int)) is not None else None,
        time=time,
        partition=f.get("partition", str),
        sbatch=f.strings("sbatch"),
    )
    if resources.gpus < 0:
        raise f.fail("gpus", f"must be 0 or more, got {resources.gpus}")
    bad = [option for option in resources.sbatch if not option.startswith("--")]
    if bad:
        raise f.fail("sbatch", f"{bad[0]!r}: give long options, e.g. --qos=high")
    f.finish()
    return resources


def _model(path: Path, index: int, data: Any) -> SweepModel:
    where = f"models[{index}]"
    f = _Fields(path, where, data)
    name = f.get("name", str, required=True)
    if not _NAME.match(name):
        raise f.fail("name", f"{name!r}: use letters, digits, '.', '_' and '-' (it names the model's folder)")
    card = f.get("card", dict, {})
    card_fields = _Fields(path, f"{where}.card", card)
    family = card_fields.get("family", str)
    parameters = card_fields.get("parameters", (int, float))
    active = card_fields.get("active_parameters", (int, float))
    window = card_fields.get("context_window", int)
    think = card_fields.get("think_delimiter", str)
    card_fields.finish()
    for key, value in (("parameters", parameters), ("active_parameters", active), ("context_window", window)):
        if value is not None and value <= 0:
            raise card_fields.fail(key, f"must be positive, got {value!r}")
    serve = _serve(path, f"{where}.serve", f.get("serve", dict, required=True))
    resources = _resources(path, f"{where}.resources", f.get("resources", dict))
    f.finish()
    clean = {"family": family, "parameters": parameters, "active_parameters": active, "context_window": window, "think_delimiter": think}
    return SweepModel(name, {k: v for k, v in clean.items() if v is not None}, serve, resources)


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file (:class:`SweepError` naming file, field and value)."""
    import yaml

    from lm_eval_radsafe.conditions import CONDITIONS, FAMILIES, REGIMES, applies
    from lm_eval_radsafe.loaders import looks_like_hub_id

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(f"{path}: no such sweep file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise SweepError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    f = _Fields(path, "", data)
    base = path.parent
    family = f.get("family", str, required=True)
    if family not in FAMILIES:
        raise f.fail("family", f"{family!r} is not one of {', '.join(FAMILIES)}")
    dataset = f.get("dataset", str, "demo" if family == "radsafe_demo" else None)
    if dataset is None:
        raise f.fail("dataset", f"missing (the {family} family needs its items: a path or hub id)")
    if family == "radsafe_demo" and dataset != "demo":
        raise f.fail("dataset", f"{dataset!r}: the radsafe_demo family runs the bundled demo set; use family radsafe200 for your items")
    conditions = f.strings("conditions")
    if not conditions:
        raise f.fail("conditions", "missing (list the conditions to run, e.g. [closed_book, clean_evidence])")
    for condition in conditions:
        if condition not in CONDITIONS:
            raise f.fail("conditions", f"{condition!r} is not a condition (known: {', '.join(CONDITIONS)})")
    regimes = f.strings("regimes") or ("greedy",)
    for regime in regimes:
        if regime not in REGIMES:
            raise f.fail("regimes", f"{regime!r} is not a regime (known: {', '.join(REGIMES)})")
        lettered = [c for c in conditions if not applies(CONDITIONS[c], REGIMES[regime])]
        if lettered:
            raise f.fail(
                "regimes", f"{regime!r} reorders the options; it does not apply to {', '.join(lettered)} (its evidence names "
                "option letters): run it in a sweep of its own conditions"
            )
    prepared_text = f.get("prepared", str)
    prepared = (base / prepared_text) if prepared_text else None
    needing = [c for c in conditions if CONDITIONS[c].uses_retrieval]
    if needing and prepared is None:
        raise f.fail("prepared", f"missing: {', '.join(needing)} need a folder from `radsafe prepare`")
    if prepared is not None and not (prepared / "manifest.json").is_file():
        raise f.fail("prepared", f"{prepared_text!r}: no manifest.json there (make it with `radsafe prepare`)")
    if dataset != "demo":
        local = Path(dataset).expanduser()
        local = local if local.is_absolute() else base / local
        if local.exists():  # a file or folder beside the sweep file; otherwise a hub id, read where it runs
            dataset = str(local)
        elif not looks_like_hub_id(dataset):
            raise f.fail("dataset", f"{dataset!r}: no such file or folder (relative paths start at the sweep file's folder)")
    output = base / f.get("output", str, required=True)
    models_data = f.get("models", list, required=True)
    if not models_data:
        raise f.fail("models", "empty (list at least one model)")
    models = tuple(_model(path, i, m) for i, m in enumerate(models_data))
    names = [m.name for m in models]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise SweepError(f"{path}: models[{i}].name: {name!r} is used twice (each model needs its own folder)")
    limit = f.positive("limit")
    sweep = Sweep(
        path=path,
        family=family,
        dataset=dataset,
        prepared=prepared,
        conditions=tuple(dict.fromkeys(conditions)),
        regimes=tuple(dict.fromkeys(regimes)),
        output=output,
        models=models,
        limit=limit,
        apply_chat_template=f.get("apply_chat_template", bool, True),
        gen_kwargs=f.get("gen_kwargs", str),
        seed=f.get("seed", int),
    )
    f.finish()
    return sweep
