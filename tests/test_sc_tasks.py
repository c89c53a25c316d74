"""Self-consistency and log-likelihood tasks through lm-eval, against hand-computed values."""

from __future__ import annotations

import json
import math
from collections import Counter

import lm_eval
import pytest

from conftest import FIXTURE, ScriptedLM
from lm_eval_radsafe.cli import task_manager
from lm_eval_radsafe.loaders import load_items
from lm_eval_radsafe.metrics import LL_METRICS, SC_METRICS

QUESTION_OF = {it.id: it.question for it in load_items(FIXTURE).items}
# fx-001 answer A (B: high-risk, unsafe, contradicts); fx-002 answer B (4 options);
# fx-003 negated, answer C. Samples per item, in order of the 20 repeats:
SAMPLES = {
    "fx-001": ["B"] * 20,  # unanimous, wrong, dangerous, synchronized
    "fx-002": ["Answer: B"] * 20,  # unanimous and right
    "fx-003": ["I cannot say."] * 10 + ["C"] * 10,  # NULL ties with C -> NULL majority
}


class RepeatLM(ScriptedLM):
    """Gives the k-th request for an item its k-th scripted sample."""

    def __init__(self) -> None:
        self.calls: Counter = Counter()
        super().__init__(self._answer)

    def _answer(self, prompt: str) -> str:
        user = json.loads(prompt)[-1]["content"]
        item_id = next(i for i, q in QUESTION_OF.items() if q in user)
        k = self.calls[item_id]
        self.calls[item_id] += 1
        return SAMPLES[item_id][k]


def test_sc_task_hand_computed(fixture_data) -> None:
    lm = RepeatLM()
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=["radsafe200_closed_book_sc"],
        task_manager=task_manager(include_defaults=False),
        apply_chat_template=True,
        log_samples=True,
        bootstrap_iters=0,
    )
    res = out["results"]["radsafe200_closed_book_sc"]
    c3 = 1 - math.log(2) / math.log(6)  # fx-003: half NULL, half C, five options + NULL
    expected = {
        "sc_accuracy": 1 / 3,
        "sc_high_risk_error": 1 / 3,
        "sc_unsafe_error": 1 / 3,
        "sc_contradiction_error": 1 / 3,
        "dangerous_overconfidence": 1 / 3,
        "mean_confidence": (2 + c3) / 3,
        "mean_confidence_correct": 1.0,
        "mean_confidence_incorrect": (1 + c3) / 2,
        "mean_confidence_high_risk_error": 1.0,
        "mean_confidence_unsafe_error": 1.0,
        "ece": (2 / 3) * 0.5 + (1 / 3) * c3,  # bin [0.9, 1]: conf 1, acc 1/2; bin [0.6, 0.7): c3, acc 0
        "mce": c3,
        "synchronized_failure": 1 / 3,
        "null_majority": 1 / 3,
        "sample_null_rate": (0 + 0 + 0.5) / 3,
        "robustness": (0 + 1 + 1) / 3,
    }
    assert set(expected) == {m.name for m in SC_METRICS}
    for name, value in expected.items():
        assert res[f"{name},strict"] == pytest.approx(value), name
    samples = {s["doc"]["id"]: s for s in out["samples"]["radsafe200_closed_book_sc"]}
    assert len(samples["fx-001"]["resps"][0]) == 20
    assert samples["fx-003"]["filtered_resps"][0] == ["NULL"] * 10 + ["C"] * 10
    assert all(kwargs["do_sample"] is True and kwargs["temperature"] == 0.7 for kwargs in lm.gen_kwargs)


def test_threshold_comes_from_metadata(fixture_data) -> None:
    out = lm_eval.simple_evaluate(
        model=RepeatLM(),
        tasks=["radsafe200_closed_book_sc"],
        task_manager=task_manager(include_defaults=False, metadata={"overconfidence_threshold": 1.0}),
        apply_chat_template=True,
        bootstrap_iters=0,
    )
    # fx-001 has confidence exactly 1.0, so it still counts at the inclusive threshold 1.0
    assert out["results"]["radsafe200_closed_book_sc"]["dangerous_overconfidence,strict"] == pytest.approx(1 / 3)


def test_bad_threshold_is_refused(fixture_data) -> None:
    with pytest.raises(ValueError, match="overconfidence_threshold"):
        loaded = task_manager(include_defaults=False, metadata={"overconfidence_threshold": 80}).load_task_or_group(["radsafe200_closed_book_sc"])
        for task in loaded.values():  # lm-eval 0.5 reads the dataset when the docs are first needed
            list(task.eval_docs)


class LetterLL(ScriptedLM):
    """Log-likelihoods that make B the most likely letter with probability 0.9 among A-E."""

    def __init__(self) -> None:
        super().__init__(lambda prompt: "")
        self.continuations: list[str] = []

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        out = []
        for request in requests:
            letter = request.args[1].strip()
            self.continuations.append(request.args[1])
            out.append((math.log(0.9) if letter == "B" else math.log(0.025), False))
        return out


def test_ll_task_hand_computed(fixture_data) -> None:
    lm = LetterLL()
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=["radsafe200_closed_book_ll"],
        task_manager=task_manager(include_defaults=False),
        bootstrap_iters=0,
    )
    res = out["results"]["radsafe200_closed_book_ll"]
    p5 = 0.9 / (0.9 + 4 * 0.025)  # five options: B renormalised
    p4 = 0.9 / (0.9 + 3 * 0.025)  # four options
    # B chosen everywhere: fx-001 wrong (high-risk, unsafe, contradicts), fx-002 right, fx-003 wrong (no flag)
    assert res["ll_accuracy,none"] == pytest.approx(1 / 3)
    assert res["ll_high_risk_error,none"] == pytest.approx(1 / 3)
    assert res["ll_unsafe_error,none"] == pytest.approx(1 / 3)
    assert res["ll_dangerous_overconfidence,none"] == pytest.approx(1 / 3)
    assert res["ll_mean_confidence,none"] == pytest.approx((2 * p5 + p4) / 3)
    assert res["ll_ece,none"] == pytest.approx(abs((2 * p5 + p4) / 3 - 1 / 3))  # one bin [0.9, 1]
    assert set(k.split(",")[0] for k in res if k.startswith("ll_") and "stderr" not in k) == {m.name for m in LL_METRICS}
    assert sorted(set(c.strip() for c in lm.continuations)) == ["A", "B", "C", "D", "E"]
