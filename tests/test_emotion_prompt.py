"""EmotionPrompt: stimuli data, prompt building, relative improvement, statistics."""

import math

import pandas as pd
import pytest

from fmbook import emotion_prompt as ep
from fmbook.emotion_prompt import instruction_induction as ii


def test_eleven_stimuli_verbatim_and_groups():
    assert list(ep.STIMULI) == [f"EP{i:02d}" for i in range(1, 12)]
    assert ep.STIMULI["EP02"].text == "This is very important to my career."
    assert ep.STIMULI["EP04"].text == "Are you sure?"
    assert ep.STIMULI["EP06"].text.startswith("Provide your answer and a confidence score between 0-1")
    sm = [s for s, v in ep.STIMULI.items() if ep.SELF_MONITORING in v.groups]
    sc = [s for s, v in ep.STIMULI.items() if ep.SOCIAL_COGNITIVE in v.groups]
    er = [s for s, v in ep.STIMULI.items() if ep.EMOTION_REGULATION in v.groups]
    assert sm == ["EP01", "EP02", "EP03", "EP04", "EP05"]
    assert sc == ["EP07", "EP08", "EP09", "EP10", "EP11"]
    assert er == ["EP03", "EP04", "EP05", "EP07"]


@pytest.mark.parametrize("condition", [c for c in ep.CONDITIONS if c != ep.BASELINE])
@pytest.mark.parametrize("few_shot", [False, True])
def test_prompts_differ_exactly_by_the_stimulus(condition, few_shot):
    task = ii.get_task("antonyms")
    tests, demos = ep.items_for("antonyms", 0, 3, 5)
    d = demos if few_shot else ()
    plain = ep.build_prompt(task, tests[0], ep.BASELINE, d)
    with_stim = ep.build_prompt(task, tests[0], condition, d)
    insert = " " + ep.stimulus_text(condition)
    i = len("Instruction: " + task.instruction)
    assert with_stim == plain[:i] + insert + plain[i:]
    m0 = ep.build_messages(task, tests[0], ep.BASELINE, d)
    m1 = ep.build_messages(task, tests[0], condition, d)
    diffs = [(a, b) for a, b in zip(m0, m1) if a != b]
    assert len(m0) == len(m1) and len(diffs) == 1
    a, b = diffs[0][0]["content"], diffs[0][1]["content"]
    assert b == a[:i] + insert + a[i:]
    if few_shot:
        assert sum(m["role"] == "assistant" for m in m1) == 5


def test_demos_exclude_test_inputs():
    tests, demos = ep.items_for("sum", 0, 20, 5)
    assert len(demos) == 5 and not ({d.input for d in demos} & {t.input for t in tests})


def test_relative_improvement_hand_computed():
    assert ep.relative_improvement(0.50, 0.54) == pytest.approx(8.0)
    assert ep.relative_improvement(0.20, 0.43) == pytest.approx(115.0)
    assert math.isnan(ep.relative_improvement(0.0, 0.3))


def _toy_results():
    # 2 tasks x 4 items; none: task a 2/4, task b 1/4; EP02: a 3/4, b 2/4; EP04: a 2/4, b 1/4
    rows = []
    pattern = {"none": {"a": [1, 1, 0, 0], "b": [1, 0, 0, 0]},
               "EP02": {"a": [1, 1, 1, 0], "b": [1, 1, 0, 0]},
               "EP04": {"a": [1, 0, 1, 0], "b": [0, 0, 0, 1]}}
    for cond, tasks in pattern.items():
        for task, outcomes in tasks.items():
            for j, c in enumerate(outcomes):
                rows.append({"model": "m", "mode": "zero-shot", "task": task, "condition": cond,
                             "item": f"{task}/0/{j}", "correct": bool(c)})
    return pd.DataFrame(rows)


def test_summary_the_papers_way():
    s = _toy_results().pipe(ep.summary).set_index("condition")
    assert s.loc["none", "accuracy"] == pytest.approx(0.375)
    assert s.loc["EP02", "accuracy"] == pytest.approx(0.625)
    assert s.loc["EP02", "relative_improvement_%"] == pytest.approx(100 * (0.625 - 0.375) / 0.375)
    assert s.loc["EP04", "relative_improvement_%"] == pytest.approx(0.0)
    assert s.loc["EP avg", "accuracy"] == pytest.approx(0.5)  # mean over stimuli per task, then tasks
    assert s.loc["EP max", "accuracy"] == pytest.approx(0.625)


def test_mcnemar_and_bootstrap():
    m = ep.mcnemar([1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1])
    assert (m["b_only_original"], m["c_only_stimulus"]) == (0, 4)
    assert m["p_value"] == pytest.approx(0.125)
    assert ep.mcnemar([1, 0], [1, 0])["p_value"] == 1.0
    diff, lo, hi = ep.paired_bootstrap(_toy_results(), "EP02", n_boot=300)
    assert diff == pytest.approx(0.25) and lo <= diff <= hi
    sig = ep.significance(_toy_results(), n_boot=100)
    assert set(sig.condition) == {"EP02", "EP04"} and (sig.p_holm >= sig.p_value).all()


def test_accuracy_table_wilson():
    acc = ep.accuracy_table(_toy_results())
    row = acc[(acc.task == "a") & (acc.condition == "none")].iloc[0]
    assert row.accuracy == 0.5 and row.n == 4 and row.ci_low < 0.5 < row.ci_high


def test_grid_and_config_errors():
    cfg = ep.EvalConfig(tasks=("sum", "antonyms"), conditions=("none", "EP01", "CoT"), n_samples=3)
    grid = ep.build_grid(cfg)
    assert len(grid) == 2 * 2 * 3 * 3  # modes x tasks x items x conditions (CoT in both modes)
    assert set(grid.budget[grid.condition == "CoT"]) == {cfg.cot_tokens}
    assert set(grid.budget[grid.condition == "EP01"]) == {cfg.long_tokens}
    assert set(grid.budget[grid.condition == "none"]) == {cfg.max_new_tokens}
    no_cot = ep.build_grid(ep.EvalConfig(tasks=("sum",), conditions=("none", "CoT"), n_samples=3,
                                         cot_in_few_shot=False))
    assert len(no_cot) == 3 * 2 + 3
    with pytest.raises(ep.EmotionPromptError, match="demo_block"):
        ep.EvalConfig(demo_block=0)
    with pytest.raises(ep.EmotionPromptError, match="allowed: none, EP01"):
        ep.EvalConfig(conditions=("none", "EP12"))
    with pytest.raises(ep.EmotionPromptError, match="allowed: zero-shot, few-shot"):
        ep.EvalConfig(modes=("one-shot",))
    with pytest.raises(ii.TaskError):
        ep.EvalConfig(tasks=("rhymes",))
    with pytest.raises(ep.EmotionPromptError, match="baseline"):
        ep.EvalConfig(conditions=("EP01",))


# ---- end to end on a tiny randomly initialised model (mechanics only, no claims) -----------------

@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from fmbook.core import lm

    folder = tmp_path_factory.mktemp("tiny-ep")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["Instruction: Sum the numbers. Input: 1 2 Answer: 3"] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<eos>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)).save_pretrained(folder)
    tok.save_pretrained(folder)
    model = lm.load_causal_lm(str(folder), verbose=False)
    model.cache = lm.OutputCache(folder / "outputs.sqlite")
    return model


def test_evaluate_and_attribution_mechanics(tiny_lm):
    cfg = ep.EvalConfig(tasks=("sum", "antonyms"), conditions=("none", "EP02", "CoT"), n_samples=2,
                        max_new_tokens=3)
    assert ep.config_for(tiny_lm, cfg).modes == ("few-shot",)  # no chat template: a base model
    assert ep.config_for(tiny_lm, cfg, base_few_shot_only=False).modes == cfg.modes
    res = ep.evaluate(tiny_lm, cfg)
    assert len(res) == 2 * 2 * 3 * 2 and res.correct.dtype == bool
    assert {"output", "extracted", "extraction_failed"} <= set(res.columns)
    assert set(ep.summary(res).condition) >= {"none", "EP02", "CoT", "EP avg", "EP max"}
    att = ep.word_attribution(tiny_lm, ep.AttributionConfig(stimuli=("EP04",), tasks=("sum",), n_samples=2))
    assert list(att.word) == ["<whole stimulus>", "Are", "you", "sure?"]
    assert att.attribution.notna().all()


def test_extra_conditions_placement_and_transform():
    def shout(task, ex):
        return ii.Example(ex.input.upper(), ex.answer, ex.accepted)

    before = ep.ExtraCondition("X1", "Your friend Bob is sick.", "before")
    after = ep.ExtraCondition("X2", "A baby is crying sadly.", "after", transform=shout)
    cfg = ep.EvalConfig(tasks=("antonyms",), conditions=("none", "X1", "X2"), modes=("zero-shot",),
                        n_samples=2, extra_conditions=(before, after))
    grid = ep.build_grid(cfg).set_index(["item", "condition"])
    task = ii.get_task("antonyms")
    item = grid.index[0][0]
    assert grid.loc[(item, "X1"), "prompt"].startswith(f"Instruction: Your friend Bob is sick. {task.instruction}\n\n")
    assert grid.loc[(item, "X2"), "prompt"].startswith(f"Instruction: {task.instruction} A baby is crying sadly.\n\n")
    assert grid.loc[(item, "X2"), "input"] == grid.loc[(item, "none"), "input"].upper()
    assert ep.config_dict(cfg)["extra_conditions"][1] == {"name": "X2", "text": "A baby is crying sadly.",
                                                          "placement": "after", "transform": "shout"}
    with pytest.raises(ep.EmotionPromptError, match="allowed: after, before"):
        ep.ExtraCondition("X3", "text", "middle")
    with pytest.raises(ep.EmotionPromptError, match="clashes"):
        ep.ExtraCondition("EP02", "text")
    with pytest.raises(ep.EmotionPromptError, match="or an extra condition: X1"):
        ep.EvalConfig(conditions=("none", "X9"), extra_conditions=(before,))
    assert grid.loc[(item, "X2"), "extract_input"] == grid.loc[(item, "none"), "input"]  # read before the rewrite
    assert grid.loc[(item, "X1"), "budget"] == cfg.max_new_tokens


# ---- placebos, demonstrations, extraction ------------------------------------------------------

def test_placebos_match_the_stimuli_in_length_and_are_neutral():
    assert list(ep.PLACEBOS) == [f"PB{i:02d}" for i in range(1, 12)]
    emotional = {"sure", "confidence", "career", "success", "excellence", "best", "proud", "pride", "goals",
                 "answer", "important", "believe", "focused", "determined"}
    for (sid, s), (pid, p) in zip(ep.STIMULI.items(), ep.PLACEBOS.items()):
        assert len(p.text.split()) == len(s.text.split()), (sid, pid)
        words = {w.strip(".,?!").lower() for w in p.text.split()}
        assert not words & emotional and "?" not in p.text and "you" not in words
    assert ep.stimulus_text("PB04") == "It rained today."


def test_demonstrations_paired_and_drawn_per_block():
    cfg = ep.EvalConfig(tasks=("antonyms",), conditions=("none", "EP02", "PB02"), n_samples=6, demo_block=2,
                        modes=("few-shot",))
    grid = ep.build_grid(cfg, chat=True)
    demos = {}
    for _, r in grid.iterrows():
        d = tuple(m["content"] for m in r.prompt if m["role"] == "assistant")
        assert len(d) == 5
        demos.setdefault(r["item"], set()).add(d)
    assert all(len(v) == 1 for v in demos.values())  # the same draw for every condition
    draws = [next(iter(demos[f"antonyms/0/{j}"])) for j in range(6)]
    assert draws[0] == draws[1] and draws[2] == draws[3] and len(set(draws)) == 3
    tests = ep.ii.get_task("antonyms").generate(6, seed=0)
    per_item = ep.demo_draws("antonyms", 0, tests, 5, block=1)
    assert all(not ({d.input for d in ds} & {t.input for t in tests}) for ds in per_item)


@pytest.mark.parametrize("task,reply,expected", [
    ("sum", "42", "42"),
    ("sum", "The sum of 12 and 30 is 42.", "42"),
    ("sum", "42 (confidence: 0.9)", "42"),
    ("sum", "Answer: 42\nConfidence score: 0.95\nExplanation: 12 + 30 = 42.", "42"),
    ("sum", "First, add 12 and 30.\n12 + 30 = 42\nSo the answer is 42.", "42"),
    ("sum", "I cannot do that.", None),
    ("diff", "**Answer:** 17, with a confidence score of 0.8", "17"),
    ("first_word_letter", "The first letter of 'apple' is 'a'.", "a"),
    ("first_word_letter", "b", "b"),
    ("second_word_letter", "Answer: p", "p"),
    ("singular_to_plural", "mice", "mice"),
    ("singular_to_plural", "The plural form of 'mouse' is 'mice'.", "mice"),
    ("singular_to_plural", "The plural of cat is cats.", "cats"),
    ("antonyms", "Cold\n\nConfidence: 0.9", "Cold"),
    ("antonyms", "A word that means the opposite would be something I think about often", None),
    ("larger_animal", "The elephant is larger than the mouse.", "elephant"),
    ("taxonomy_animal", "The animals in the list are: cat, dog", "cat, dog"),
    ("negation", "The sky is not blue.", "The sky is not blue."),
])
def test_extract_answer(task, reply, expected):
    example_input = "mouse, elephant" if task == "larger_animal" else ""
    assert ep.extract_answer(task, reply, example_input) == expected


def test_score_outputs_counts_failures_as_wrong():
    ex_ok, ex_bad = ep.ii.Example("12 30", "42"), ep.ii.Example("1 2", "3")
    grid = pd.DataFrame({"task": ["sum", "sum"], "input": ["12 30", "1 2"], "output": ["It is 42.", "no idea"],
                         "_example": [ex_ok, ex_bad]})
    out = ep.score_outputs(grid)
    assert list(out.correct) == [True, False] and list(out.extraction_failed) == [False, True]


# ---- the paper's recipe, the placebo control, the ranking, claims --------------------------------

def test_paper_recipe_reproduces_the_headline():
    assert ep.analysis.paper_recipe("+max") == pytest.approx(8.00, abs=0.01)
    assert ep.analysis.paper_recipe("+avg") == pytest.approx(2.20, abs=0.01)


def _grid_results(acc: dict, n: int = 20, modes=("zero-shot", "few-shot"), tasks=("a", "b"), model="m"):
    """Results where condition c on task t answers the first round(acc[c][t] * n) items right."""
    rows = []
    for mode in modes:
        for t in tasks:
            for c, per_task in acc.items():
                k = round(per_task[t] * n)
                rows += [{"model": model, "mode": mode, "task": t, "condition": c, "item": f"{t}/0/{j}",
                          "correct": j < k, "extraction_failed": False} for j in range(n)]
    return pd.DataFrame(rows)


def test_recipe_gain_hand_computed():
    acc = {"none": {"a": 0.5, "b": 0.25}, "EP01": {"a": 0.75, "b": 0.25}, "EP02": {"a": 0.5, "b": 0.5}}
    res = _grid_results(acc)
    mx = ep.analysis.recipe_gain(res, ["EP01", "EP02"], "+max", n_boot=50)
    # +max per task: a 0.75, b 0.5 -> 0.625 vs 0.375 -> +66.7% in both modes
    assert mx.estimate == pytest.approx(100 * (0.625 - 0.375) / 0.375)
    av = ep.analysis.recipe_gain(res, ["EP01", "EP02"], "+avg", n_boot=50)
    assert av.estimate == pytest.approx(100 * (0.5 - 0.375) / 0.375)
    assert mx.low <= mx.estimate <= mx.high


def test_placebo_difference_and_ranking():
    acc = {"none": {"a": 0.5, "b": 0.5}, "EP01": {"a": 0.75, "b": 0.5}, "EP02": {"a": 0.5, "b": 0.5},
           "EP03": {"a": 0.6, "b": 0.6}, "PB01": {"a": 0.5, "b": 0.55}, "PB02": {"a": 0.5, "b": 0.5},
           "PB03": {"a": 0.5, "b": 0.5}}
    res = _grid_results(acc)
    d = ep.analysis.placebo_difference(res, ["EP01", "EP02", "EP03"], ["PB01", "PB02", "PB03"], n_boot=50)
    # stimuli +max: a .75, b .6 -> .675 (+35%); placebos: a .5, b .55 -> .525 (+5%)
    assert d.estimate == pytest.approx(35.0 - 5.0)
    table, rho = ep.analysis.stimulus_ranking(res, ["EP01", "EP02", "EP03"], n_boot=50)
    # ours: EP01 62.5 > EP03 60 > EP02 50; paper: EP02 51.84 > EP03 51.09 > EP01 48.10 -> rho = -1
    assert rho.estimate == pytest.approx(-1.0)
    assert list(table.stimulus) == ["EP02", "EP03", "EP01"]


def test_claims_verdicts_on_a_clear_synthetic_effect():
    stim = [f"EP{i:02d}" for i in range(1, 12)]
    plac = [f"PB{i:02d}" for i in range(1, 12)]
    acc = {"none": {"a": 0.3, "b": 0.3}}
    acc.update({s: {"a": 0.9, "b": 0.9} for s in stim})
    acc.update({p: {"a": 0.3, "b": 0.3} for p in plac})
    rows = ep.analysis.claims(_grid_results(acc, n=40), stim, plac, model="m", n_boot=100)
    verdicts = {r.claim.split(":")[0][:30]: r.verdict for r in rows}
    assert [r.verdict for r in rows[:3]] == ["holds", "holds", "holds"]
    assert rows[0].paper == 8.0 and rows[1].paper == 2.2
    assert all(r.level == pytest.approx(1 - 0.05 / 5) for r in rows[:4])
    assert "holds" in verdicts.values()
    assert "helps" in ep.analysis.effect_statement(rows)
    null = {c: {"a": 0.5, "b": 0.5} for c in ["none", *stim, *plac]}
    rows0 = ep.analysis.claims(_grid_results(null, n=40), stim, plac, model="m", n_boot=100)
    assert rows0[1].verdict == "not resolved"  # no effect at all: the interval is a point at 0
    assert "contains zero" in ep.analysis.effect_statement(rows0)


def test_plan_items_resolves_the_papers_effect():
    n = ep.analysis.plan_items(baseline=0.5, relative=0.08, discordance=0.2)
    from fmbook.core import stats
    assert stats.minimum_detectable_difference(0.5, n, discordance=0.2) <= 0.04
    assert stats.minimum_detectable_difference(0.5, n - 10, discordance=0.2) > 0.04


def test_bench_prompt_file_is_the_chapters_grid():
    from fmbook.core import lm_bench

    assert lm_bench.load_prompts() == ep.bench_prompt_set()


def test_paper_words_gap_and_sentence():
    scores = pd.DataFrame({"stimulus": ["EP04"] * 6, "position": [0, 1, 2, 3, 4, 5],
                           "word": ["Are", "you", "sure?", "confidence", "the", "a"],
                           "attribution": [0.0, 0.1, 1.0, 1.2, -0.1, 0.0], "se": [0.1] * 6})
    gap = ep.analysis.paper_words_gap(scores)
    assert gap.estimate == pytest.approx(1.1 - 0.0)
    assert gap.low > 0 and "holds here" in ep.analysis.verdict_sentence("Gap", gap)
    from fmbook.core.stats import Interval
    assert "does not resolve" in ep.analysis.verdict_sentence("Gap", Interval(0.1, -0.2, 0.4))
    assert "opposite" in ep.analysis.verdict_sentence("Gap", Interval(-0.5, -0.8, -0.2))
