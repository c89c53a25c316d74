"""Strict answer extraction: a table of real-looking outputs and a never-raises property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lm_eval_radsafe.filters import NULL, StrictLetterFilter, extract_letter

FIVE = "ABCDE"
FOUR = "ABCD"

# (model output, option letters of the item, expected letter or NULL)
CASES = [
    # bare letters and wrappers
    ("B", FIVE, "B"),
    ("B.", FIVE, "B"),
    (" C\n", FIVE, "C"),
    ("(B)", FIVE, "B"),
    ("[D]", FIVE, "D"),
    ("**B**", FIVE, "B"),
    ("`E`", FIVE, "E"),
    ("b", FIVE, "B"),
    ("B)", FIVE, "B"),
    # a letter followed by its option text or an explanation
    ("B. Ultrasound of the right lower quadrant", FIVE, "B"),
    ("C) MRI of the lumbar spine", FIVE, "C"),
    ("D: Stop the contrast injection", FIVE, "D"),
    ("**A.** Non-contrast head CT", FIVE, "A"),
    ("A\n\nNon-contrast CT excludes haemorrhage first.", FIVE, "A"),
    ("Option D", FIVE, "D"),
    ("Option C - call the device team", FIVE, "C"),
    # explicit commitments
    ("Answer: B", FIVE, "B"),
    ("answer: C", FIVE, "C"),
    ("Answer:B", FIVE, "B"),
    ("**Answer:** D", FIVE, "D"),
    ("The answer is B", FIVE, "B"),
    ("The correct answer is (C).", FIVE, "C"),
    ("Final answer: E", FIVE, "E"),
    ("The correct option is A.", FIVE, "A"),
    ("Output: C", FIVE, "C"),
    ("My selection is D.", FIVE, "D"),
    ("C is the correct answer.", FIVE, "C"),
    ("Ultrasound avoids radiation in children, so the answer is B.", FIVE, "B"),
    ("A 45-year-old with these findings most likely has a dissection. Answer: D", FIVE, "D"),
    ("The answer is B, as CT is slower in children.", FIVE, "B"),
    ("The answer is B and a CT is not needed.", FIVE, "B"),
    ("\\boxed{B}", FIVE, "B"),
    ("Therefore \\boxed{\\text{D}}", FIVE, "D"),
    ("Answer: B. The answer is B.", FIVE, "B"),
    # reasoning traces
    ("<think>Maybe A, but haemorrhage must be excluded first.</think>\nC", FIVE, "C"),
    ("<think>A? B?</think>Answer: B", FIVE, "B"),
    ("<think>first</think> A <think>again</think> D", FIVE, "D"),
    ("<think>The stem says AVOIDED, so the unsafe action is C", FIVE, NULL),  # trace never closed
    ("<|channel|>analysis<|message|>Think about A.<|channel|>final<|message|>E", FIVE, "E"),
    # rejected: the article, option text, no commitment, conflicts
    ("A 45-year-old man presents with chest pain.", FIVE, NULL),
    ("A CT scan should be done first.", FIVE, NULL),
    ("Ultrasound of the abdomen", FIVE, NULL),
    ("Non-contrast head CT", FIVE, NULL),
    ("B or C", FIVE, NULL),
    ("The answer is B or C.", FIVE, NULL),
    ("Either A or D could be right.", FIVE, NULL),
    ("A. CT\nB. MRI\nC. Ultrasound", FIVE, NULL),
    ("B. The answer is C.", FIVE, NULL),
    ("I am not sure.", FIVE, NULL),
    ("The answer is a fracture of the radius.", FIVE, NULL),
    ("", FIVE, NULL),
    ("   \n  ", FIVE, NULL),
    ("Option B is wrong because it delays treatment.", FIVE, NULL),
    ("Answer: A CT of the head without contrast", FIVE, NULL),
    ("The answer is A because haemorrhage must be excluded.", FIVE, "A"),
    ("The answer is A, a non-contrast CT.", FIVE, "A"),
    # letters outside the item's options
    ("E", FOUR, NULL),
    ("Answer: E", FOUR, NULL),
    ("F", FIVE, NULL),
    ("D", FOUR, "D"),
]


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize(("output", "letters", "expected"), CASES)
def test_extract_letter(output: str, letters: str, expected: str) -> None:
    assert extract_letter(output, letters) == expected


def test_non_string_is_null() -> None:
    assert extract_letter(None) == NULL
    assert extract_letter(3) == NULL


def test_custom_think_delimiter() -> None:
    text = "<reasoning>probably A</reasoning>B"
    assert extract_letter(text, FIVE, think_end="</reasoning>", think_start="<reasoning>") == "B"
    assert extract_letter("<reasoning>probably A", FIVE, think_end="</reasoning>", think_start="<reasoning>") == NULL


def test_filter_keeps_one_letter_per_repeat_and_uses_each_docs_letters() -> None:
    four = {"options": [{"letter": x} for x in FOUR]}
    five = {"options": [{"letter": x} for x in FIVE]}
    out = StrictLetterFilter().apply([["E", "Answer: B"], ["E"]], [four, five])
    assert out == [[NULL, "B"], ["E"]]


@settings(max_examples=400, deadline=None)
@given(st.text(), st.sampled_from([FOUR, FIVE]))
def test_never_raises_on_arbitrary_text(text: str, letters: str) -> None:
    result = extract_letter(text, letters)
    assert result == NULL or result in letters


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ABCDEabcde .:()*[]\n<>/think", max_size=40), st.sampled_from([FOUR, FIVE]))
def test_never_raises_on_letter_heavy_text(text: str, letters: str) -> None:
    result = extract_letter(text, letters)
    assert result == NULL or result in letters


# --------------------------------------------------------------------------- linear time

ADVERSARIAL = {
    "answer, whitespace, no letter": lambda n: "answer" + " " * n + "x",
    "answer, whitespace, 'is'": lambda n: "answer" + " " * n + "is",
    "commitment, whitespace, no alternative": lambda n: "Answer: B" + " " * n + "x",
    "closing bracket, whitespace": lambda n: "answer: B)" + " " * n + "x",
    "letter, whitespace, 'is the'": lambda n: "B" + " " * n + "is the",
    "option, whitespace, is, whitespace": lambda n: "option" + " " * (n // 2) + "is" + " " * (n // 2),
    "repeated commitments": lambda n: "answer is " * (n // 10),
    "repeated letters": lambda n: "A " * (n // 2),
    "blank lines then a listed letter": lambda n: "\n" * n + "B. text",
    "opened think tags": lambda n: "<think>" * (n // 7) + "</think>B",
}


def _seconds(text: str) -> float:
    import time

    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        extract_letter(text)
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize("shape", sorted(ADVERSARIAL))
def test_extraction_time_grows_linearly_up_to_one_mebibyte(shape: str) -> None:
    """A reply of 1 MiB is read in well under a second, and four times the text takes
    about four times as long (quadratic backtracking would take sixteen)."""
    make = ADVERSARIAL[shape]
    # small first: a quadratic pattern fails here in seconds instead of running for hours
    assert _seconds(make(1 << 14)) < 0.1, f"{shape}: slow at 16 KiB"
    small, large = _seconds(make(1 << 18)), _seconds(make(1 << 20))
    assert large < 1.5, f"{shape}: {large:.2f} s for 1 MiB"
    assert large < 8 * max(small, 1e-3), f"{shape}: {small:.4f} s at 256 KiB, {large:.4f} s at 1 MiB"
