"""Instruction Induction generators and checkers: every generated answer passes its own checker,
hand-made cases, wrong answers fail."""

import pytest

from fmbook.emotion_prompt import instruction_induction as ii

REQUIRED = ["sum", "diff", "first_word_letter", "second_word_letter", "letters_list", "num_to_verbal",
            "orthography_starts_with", "singular_to_plural", "larger_animal", "taxonomy_animal",
            "negation", "antonyms", "synonyms"]


def test_required_tasks_exist():
    assert set(REQUIRED) <= set(ii.TASKS)


@pytest.mark.parametrize("name", list(ii.TASKS))
def test_generated_answers_pass_own_checker(name):
    task = ii.get_task(name)
    examples = task.generate(40, seed=3)
    assert len(examples) == 40
    for ex in examples:
        assert task.check(ex, ex.answer), (name, ex)
        for alt in ex.accepted:
            assert task.check(ex, alt), (name, ex, alt)
        assert task.check(ex, f"Answer: {ex.answer}."), (name, ex)


@pytest.mark.parametrize("name", list(ii.TASKS))
def test_wrong_answer_fails(name):
    task = ii.get_task(name)
    for ex in task.generate(20, seed=1):
        assert not task.check(ex, "zzz qqq"), (name, ex)
        assert not task.check(ex, ""), (name, ex)


@pytest.mark.parametrize("name", list(ii.TASKS))
def test_seeded_and_distinct(name):
    task = ii.get_task(name)
    assert task.generate(10, seed=0) == task.generate(10, seed=0)
    assert task.generate(10, seed=0) != task.generate(10, seed=1)


def test_known_cases():
    E = ii.Example
    assert ii.get_task("sum").check(E("23 58", "81"), "81")
    assert not ii.get_task("sum").check(E("23 58", "81"), "80")
    assert not ii.get_task("sum").check(E("23 58", "81"), "The sum of 23 and 58 is 81.")
    assert ii.get_task("diff").check(E("58 23", "35"), "35")
    assert ii.get_task("first_word_letter").check(E("banana", "b"), "B")
    assert ii.get_task("letters_list").check(E("cat", "c a t"), "c, a, t")
    assert not ii.get_task("letters_list").check(E("cat", "c a t"), "c t a")
    assert ii.number_to_words(47) == "forty-seven"
    assert ii.number_to_words(105) == "one hundred and five"
    assert ii.number_to_words(6360) == "six thousand three hundred and sixty"
    nv = ii.get_task("num_to_verbal")
    assert nv.check(E("47", "forty-seven"), "Forty seven")
    assert nv.check(E("6360", "six thousand three hundred and sixty"), "six thousand three hundred sixty")
    assert not nv.check(E("47", "forty-seven"), "forty-six")
    assert ii.get_task("singular_to_plural").check(E("mouse", "mice"), '"mice"')
    assert not ii.get_task("singular_to_plural").check(E("mouse", "mice"), "mouses")
    ex = E("The bus was parked near the big beach. Letter: b", "bus big beach")
    assert ii.get_task("orthography_starts_with").check(ex, "beach, bus, big")
    assert not ii.get_task("orthography_starts_with").check(ex, "bus, big")
    tx = ii.get_task("taxonomy_animal")
    assert tx.check(E("chair, cat, lamp, dog", "cat, dog"), "dog and cat")
    assert ii.get_task("negation").check(E("I am hungry.", "I am not hungry.", ("I'm not hungry.",)), "I'm not hungry.")
    assert ii.get_task("antonyms").check(E("big", "small", ("little", "tiny")), "little")
    assert ii.get_task("synonyms").check(E("big", "large", ("huge",)), "Huge")
    # EP01/EP06 ask for a confidence score: it is stripped before checking
    assert ii.get_task("sum").check(E("23 58", "81"), "81 (confidence: 0.9)")


def test_larger_animal_rule():
    task = ii.get_task("larger_animal")
    for ex in task.generate(30, seed=0):
        a, b = ex.input.split(", ")
        big, small = (a, b) if ii.ANIMAL_KG[a] > ii.ANIMAL_KG[b] else (b, a)
        assert ex.answer == big and ii.ANIMAL_KG[big] >= 10 * ii.ANIMAL_KG[small]
        assert not task.check(ex, small)


def test_unknown_task_lists_known():
    with pytest.raises(ii.TaskError, match="known tasks: sum"):
        ii.get_task("translation_en-de")
    with pytest.raises(ii.TaskError):
        ii.get_task("sum").generate(-1)
