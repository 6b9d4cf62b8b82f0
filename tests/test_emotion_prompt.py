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
    # CoT is zero-shot only
    assert len(grid) == 2 * 3 * 3 + 2 * 3 * 2
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
    assert len(res) == 2 * 2 * 3 + 2 * 2 * 2 and res.correct.dtype == bool
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
