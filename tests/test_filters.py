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
    # hedges: another option endorsed beside the committed one is NULL; an article or a
    # rejected option is not a hedge
    ("B, but C is also acceptable.", FIVE, NULL),
    ("The answer is B, although C could also be argued.", FIVE, NULL),
    ("Answer: B (C is also reasonable)", FIVE, NULL),
    ("B. C would also be acceptable.", FIVE, NULL),
    ("Answer: B or possibly C", FIVE, NULL),
    ("The answer is B; however, C is also correct.", FIVE, NULL),
    ("Answer: C. A is equally plausible.", FIVE, NULL),
    ("Answer: B. Option C (CT angiography) is also acceptable.", FIVE, NULL),
    ("The answer is B. Options A and C are also reasonable.", FIVE, NULL),
    ("The answer is B. C is also incorrect.", FIVE, "B"),
    ("Answer: B. Option B is also the safest and is also correct.", FIVE, "B"),
    ("Answer: D. MRA is also acceptable but slower.", FIVE, "D"),
    ("The answer is B (MRI); CT would also be reasonable.", FIVE, "B"),
    ("Answer: B. A CT is also reasonable.", FIVE, "B"),
    # reasoning traces
    ("<think>\nThe patient is pregnant, so avoid ionising radiation. CT (A) is out.\n</think>\n\nB", FIVE, "B"),
    ("<think>Option A exposes the fetus. Option C is invasive.</think>\n\n**Answer:** B", FIVE, "B"),
    ("<think>\nLet me weigh A against D.\nA: contrast risk. D: safe.\n</think>\nThe answer is D.", FIVE, "D"),
    ("<think>\nStep 1: gadolinium with eGFR < 30 is contraindicated.\nStep 2: so option C is unsafe.\nThe answer might be", FIVE, NULL),
    ("<think>I think it's B</think>", FIVE, NULL),  # the answer stayed inside the trace
    ("<think>A or B?</think>\nAnswer: B or C", FIVE, NULL),
    ("Let me think step by step.\n1. The stem asks for the first test.\n2. Ultrasound is first-line in children.\nTherefore, the answer is C.", FIVE, "C"),
    ("Reasoning: MRI is contraindicated with this pacemaker.\nFinal answer: (D)", FIVE, "D"),
    # markdown: headings, bold, bullets, quotes, tables, code fences
    ("## Answer\n\nB", FIVE, "B"),
    ("### Final Answer\n**C**", FIVE, "C"),
    ("## Answer: D\n\nMRI without contrast avoids the risk.", FIVE, "D"),
    ("**Answer: B**\n\nUltrasound is first-line.", FIVE, "B"),
    ("**Correct answer: E**", FIVE, "E"),
    ("**Answer:** (D)", FIVE, "D"),
    ("**Answer**: (B)", FIVE, "B"),
    ("- **Answer:** C\n- **Reason:** no radiation", FIVE, "C"),
    ("> **Answer:** A", FIVE, "A"),
    ("* A: contraindicated\n* B: safe\n* C: delays care", FIVE, NULL),
    ("| Option | Safe? |\n|---|---|\n| A | no |\n| B | yes |", FIVE, NULL),
    ("| Option | Verdict |\n|---|---|\n| A | unsafe |\n| B | correct |\n\n**Answer:** B", FIVE, "B"),
    # other languages
    ("Respuesta: B", FIVE, "B"),
    ("La respuesta correcta es C.", FIVE, "C"),
    ("La respuesta correcta es la B.", FIVE, "B"),
    ("Respuesta: A porque evita la radiación.", FIVE, "A"),
    ("Respuesta: A TC craneal sin contraste", FIVE, NULL),  # the Spanish article, as in English
    ("Respuesta: B o C", FIVE, NULL),
    ("Réponse : C", FIVE, "C"),
    ("La bonne réponse est D.", FIVE, "D"),
    ("RÉPONSE : A", FIVE, "A"),
    ("Réponse : B ou C", FIVE, NULL),
    ("Antwort: D", FIVE, "D"),
    ("Die richtige Antwort ist B.", FIVE, "B"),
    ("Die Antwort lautet C.", FIVE, "C"),
    ("Antwort: B oder D", FIVE, NULL),
    ("Antwort: A CT ist nötig", FIVE, NULL),
    ("Risposta: A", FIVE, "A"),
    ("La risposta corretta è A, perché evita le radiazioni.", FIVE, "A"),
    ("Resposta: E", FIVE, "E"),
    ("A resposta correta é a alternativa B.", FIVE, "B"),
    ("Ответ: C", FIVE, "C"),
    ("Правильный ответ — D", FIVE, "D"),
    ("Ответ: B или C", FIVE, NULL),
    ("Ответ: С", FIVE, NULL),  # a Cyrillic Es, not the letter C
    ("答案：B", FIVE, "B"),
    ("正确答案是 C", FIVE, "C"),
    ("答案是 (D)", FIVE, "D"),
    ("答案：B或C", FIVE, NULL),
    ("答え：A", FIVE, "A"),
    ("答案：E", FOUR, NULL),
    # a bracketed letter after the option text
    ("Ultrasound (B)", FIVE, "B"),
    ("The safest choice is ultrasound, option (C).", FIVE, "C"),
    ("Non-contrast MRI (D) is preferred.", FIVE, "D"),
    ("CT (A) is unsafe here; ultrasound (B) is correct.", FIVE, "B"),
    ("Ultrasound (B) or MRI (C) are both reasonable.", FIVE, NULL),
    ("CT (A) or ultrasound (B)", FIVE, NULL),
    ("A. CT (A)\nB. MRI (B)", FIVE, NULL),
    ("Ultrasound (E)", FOUR, NULL),
    # "option X is correct"
    ("Option B is correct", FIVE, "B"),
    ("Option C is the correct answer because it avoids radiation.", FIVE, "C"),
    ("Choice D is the best answer.", FIVE, "D"),
    ("Option B is correct, not option C.", FIVE, "B"),
    ("(E) is the most appropriate next step.", FIVE, "E"),
    # JSON-ish
    ('{"answer": "B"}', FIVE, "B"),
    ('{"answer": "C", "confidence": 0.8}', FIVE, "C"),
    ('```json\n{"answer": "D", "reason": "no radiation"}\n```', FIVE, "D"),
    ("{'answer': 'A'}", FIVE, "A"),
    ('{"final_answer": "C"}', FIVE, "C"),
    ('{"choice": "D"}', FIVE, "D"),
    ('{"reasoning": "A is unsafe", "answer": "E"}', FIVE, "E"),
    ('{"answer": "B", "alternative": "C"}', FIVE, "B"),
    ('{"answer": ["B", "C"]}', FIVE, NULL),
    ('{"answer": "B, C"}', FIVE, NULL),
    ('{"answer": null}', FIVE, NULL),
    ('{"answer": "A CT of the head"}', FIVE, NULL),
    # LaTeX
    ("$\\boxed{B}$", FIVE, "B"),
    ("\\[\\boxed{\\text{C}}\\]", FIVE, "C"),
    ("\\boxed{\\textbf{D}}", FIVE, "D"),
    ("\\boxed{(A)}", FIVE, "A"),
    ("\\boxed{\\mathrm{E}}", FIVE, "E"),
    ("**Final Answer:** \\boxed{C}", FIVE, "C"),
    ("The answer is $\\boxed{\\text{B}}$.", FIVE, "B"),
    ("\\boxed{B} \\boxed{C}", FIVE, NULL),
    ("\\boxed{E}", FOUR, NULL),
    # hedges and conflicting commitments
    ("B or maybe C", FIVE, NULL),
    ("Probably B, but C is possible.", FIVE, NULL),
    ("Answer: B\nActually, the answer is C.", FIVE, NULL),
    ("I would choose B or C.", FIVE, NULL),
    ("Both B and C are correct.", FIVE, NULL),
    ("Answer: B\nExplanation: ultrasound first.", FIVE, "B"),
    # letters outside the item's options
    ("E", FOUR, NULL),
    ("Answer: E", FOUR, NULL),
    ("F", FIVE, NULL),
    ("D", FOUR, "D"),
]


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 100


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
    "foreign answer word, whitespace, verb": lambda n: "respuesta" + " " * n + "es",
    "foreign answer word, verb, whitespace, article": lambda n: "respuesta es la" + " " * n + "x",
    "repeated foreign commitments": lambda n: "Réponse : " * (n // 10),
    "repeated foreign phrases with adjective and article": lambda n: "respuesta correcta es la " * (n // 25),
    "foreign commitment, repeated connectors": lambda n: "Respuesta: B" + " o" * (n // 2),
    "repeated Chinese answer words": lambda n: "答案是：" * (n // 4),
    "Chinese answer word, whitespace, verb, whitespace": lambda n: "答案" + " " * (n // 2) + "是" + " " * (n // 2),
    "repeated JSON answer keys": lambda n: '{"answer": "' * (n // 12),
    "repeated final_answer keys": lambda n: '"final_answer"' * (n // 14),
    "repeated bracketed letters": lambda n: "(B) " * (n // 4),
    "answer, then repeated hedge openings": lambda n: "Answer: B. C is also " + "C (" * (n // 3),
    "answer, then repeated hedge verbs": lambda n: "Answer: B. C " + "could also " * (n // 11),
    "repeated open brackets": lambda n: "Ultrasound (" * (n // 12),
    "repeated boxed openings": lambda n: "\\boxed{\\mathrm{" * (n // 15),
    "letter, whitespace, 'is the most'": lambda n: "B" + " " * n + "is the most",
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
