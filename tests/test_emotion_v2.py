"""The Good, the Bad, and Why: attack data and conditions, word-level attack, effects and claims,
logit lens and soft prompts (on a tiny random model saved in the test)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import save_tiny_qwen2

from fmbook import emotion_attack as ea
from fmbook import emotion_decode as ed
from fmbook import emotion_prompt as ep
from fmbook import emotion_v2
from fmbook.core import lm
from fmbook.emotion_prompt import instruction_induction as ii

@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A randomly initialised tiny Qwen2 model and a small byte-level BPE tokenizer, saved."""
    folder = tmp_path_factory.mktemp("tiny-qwen2-v2")
    corpus = ["Instruction: Sum the two given numbers. Your friend Bob is sick.", "Input: 12 30\nAnswer: 42",
              "A baby is crying sadly. This is very important to my career. Are you sure?",
              "Write the larger of the two given animals. cat, horse"] * 20
    save_tiny_qwen2(folder, corpus, vocab_size=360, num_hidden_layers=3, max_position_embeddings=1024, tie_word_embeddings=False)
    return folder



# ------------------------------------------------------------------------------------------
# Data and conditions
# ------------------------------------------------------------------------------------------

def test_stimuli_file_sources_and_confirmed_sentences():
    s = ea.load_stimuli()
    assert s.sentences["EA01"].text == "Your friend Bob is sick." and s.sentences["EA01"].checked
    assert s.sentences["EA16"].text == "A baby is crying sadly." and s.sentences["EA16"].checked
    assert s.sentences["MS01"].text == "You're safe." and s.sentences["MS01"].checked
    assert {k for k, v in s.sentences.items() if v.checked} == {"EA01", "EA16", "MS01"}
    third = [v for v in s.sentences.values() if v.source.startswith("third-party")]
    assert len(third) == 20 and not any(v.checked for v in third)
    assert len(s.ids([ea.NEGATIVE_EVENTS])) == 15 and len(s.ids([ea.AROUSAL])) == 7
    ranks = {k: v.arousal_rank for k, v in s.sentences.items() if v.arousal_rank}
    assert sorted(ranks, key=ranks.get) == ["EA22", "EA17", "EA20", "EA18", "EA21", "EA16", "EA19"]


def test_stimuli_file_is_replaceable(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("stimuli:\n  - {id: X01, family: negative life events, text: 'It rains.', source: me}\n"
                    "word_level_adjectives: [gloomy]\n")
    cfg = ea.AttackConfig(tasks=("sum",), modes=("zero-shot",), families=(ea.NEGATIVE_EVENTS,), word_level=False,
                          n_samples=2, stimuli_path=str(path))
    assert cfg.attacks == ("X01",)
    grid = ep.build_grid(cfg.eval_configs()[0])
    assert set(grid.condition) == {"none", "X01 before", "X01 after"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("stimuli:\n  - {id: X01, family: joy, text: 'Hi.', source: me}\nword_level_adjectives: [a]\n")
    with pytest.raises(ea.EmotionAttackError, match="allowed: Maslow's hierarchy of needs, heightened"):
        ea.load_stimuli(bad)


def test_bad_parameters_name_the_allowed_values():
    with pytest.raises(ea.EmotionAttackError, match="allowed: negative life events, heightened emotional arousal"):
        ea.AttackConfig(families=("fear",))
    with pytest.raises(ea.EmotionAttackError, match="allowed: after, before"):
        ea.AttackConfig(placements=("middle",))
    with pytest.raises(ea.EmotionAttackError, match="allowed: EA16"):
        ea.AttackConfig(families=(ea.AROUSAL,), attacks=("EA01",))
    with pytest.raises(ea.EmotionAttackError, match="allowed: EP01"):
        ea.AttackConfig(positive=("EP99",))
    with pytest.raises(ea.EmotionAttackError, match="needs one of the tasks"):
        ea.AttackConfig(tasks=("sum",), word_level=True)
    with pytest.raises(ea.EmotionAttackError, match="allowed: larger_animal"):
        ea.word_attack("sum", ii.Example("1 2", "3"))


def test_attack_grid_placements_and_positive_on_the_same_items():
    cfg = ea.AttackConfig(tasks=("sum", "larger_animal"), modes=("zero-shot",), attacks=("EA01", "EA16"),
                          positive=("EP02", "MS01"), n_samples=3)
    main, word = [ep.build_grid(c) for c in cfg.eval_configs()]
    g = main.set_index(["item", "condition"])
    item = "sum/0/0"
    instr = ii.get_task("sum").instruction
    assert f"Instruction: Your friend Bob is sick. {instr}\n" in g.loc[(item, "EA01 before"), "prompt"]
    assert f"Instruction: {instr} Your friend Bob is sick.\n" in g.loc[(item, "EA01 after"), "prompt"]
    assert f"Instruction: {instr} You're safe.\n" in g.loc[(item, "MS01"), "prompt"]
    assert f"Instruction: {instr} This is very important to my career.\n" in g.loc[(item, "EP02"), "prompt"]
    assert set(word.task) == {"larger_animal"} and set(word.condition) == {"none", ea.WORD_LEVEL}
    assert set(word[word.condition == "none"].item) <= set(main.item)
    labelled = ea.label(main, cfg.stimuli).drop_duplicates("condition").set_index("condition")
    assert labelled.loc["EA16 before", "family"] == ea.AROUSAL
    assert labelled.loc["EA16 before", "kind"] == ea.KIND_ATTACK
    assert labelled.loc["MS01", "kind"] == ea.KIND_POSITIVE and labelled.loc["EP02", "kind"] == ea.KIND_POSITIVE


def test_word_attack_keeps_the_answer_checkable():
    adj = ("sad", "furious")
    ex = ii.Example("cat, horse", "horse")
    att = ea.word_attack("larger_animal", ex, adj)
    a_cat, a_horse = att.input.split(", ")
    assert a_cat.endswith(" cat") and a_horse.endswith(" horse") and a_horse.split()[0] in adj
    task = ii.get_task("larger_animal")
    assert task.check(att, "horse") and task.check(att, a_horse) and not task.check(att, "cat")
    neg = ea.word_attack("negation", ii.Example("The sky is blue.", "The sky is not blue.", ("The sky isn't blue.",)), adj)
    w = neg.input.split()[1]
    assert neg.input == f"The {w} sky is blue." and neg.answer == f"The {w} sky is not blue."
    assert ii.get_task("negation").check(neg, f"The {w} sky isn't blue.")
    neg2 = ea.word_attack("negation", ii.Example("Cats can fly.", "Cats cannot fly."), adj)
    assert neg2.input.split()[1] == "cats" and neg2.input.split()[0].lower() in adj
    pl = ea.word_attack("singular_to_plural", ii.Example("mouse", "mice"), adj)
    assert ii.get_task("singular_to_plural").check(pl, "mice") and ii.get_task("singular_to_plural").check(pl, pl.input.split()[0] + " mice")
    assert ea.word_attack("larger_animal", ex, adj) == att  # deterministic


# ------------------------------------------------------------------------------------------
# Effects and claims on hand-made results
# ------------------------------------------------------------------------------------------

def _toy(n=20, harm=0.5, help_=0.25, word=0.5, seed=0):
    """none right on every item; attacks wrong on a share `harm`; positive stimuli right on all and
    fix nothing (ceiling) -> use a baseline that is right on half the items instead."""
    rng = np.random.default_rng(seed)
    base = np.array([1.0] * (n // 2) + [0.0] * (n - n // 2))
    conds = {"none": base,
             "EA01 before": base * (rng.random(n) > harm), "EA16 after": base * (rng.random(n) > harm),
             "EP02": np.maximum(base, rng.random(n) < help_), "MS01": np.maximum(base, rng.random(n) < help_),
             ea.WORD_LEVEL: base * (rng.random(n) > word)}
    rows = [{"model": "m", "mode": "zero-shot", "task": "t", "item": f"t/0/{i}", "condition": c, "correct": bool(v[i])}
            for c, v in conds.items() for i in range(n)]
    return ea.label(pd.DataFrame(rows), ea.load_stimuli())


def test_effects_hand_computed():
    res = _toy()
    eff = ea.effects(res, n_boot=200).set_index("condition")
    for cond in ["EA01 before", "EP02", ea.WORD_LEVEL]:
        sub = res.pivot_table(index="item", columns="condition", values="correct").astype(float)
        d = sub[cond] - sub["none"]
        assert eff.loc[cond, "diff"] == pytest.approx(d.mean())
        half = (eff.loc[cond, "diff_high"] - eff.loc[cond, "diff_low"]) / 2
        from scipy import stats as st
        expect = st.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)) if d.std() > 0 else 0
        assert half == pytest.approx(expect)
        assert eff.loc[cond, "rel_%"] == pytest.approx(100 * d.mean() / sub["none"].mean())
        assert eff.loc[cond, "n"] == 20 and eff.loc[cond, "mdd"] > 0
    pooled = ea.pooled_effect(res, ea.KIND_ATTACK)
    sub = res.pivot_table(index="item", columns="condition", values="correct").astype(float)
    expect = ((sub["EA01 before"] + sub["EA16 after"]) / 2 - sub["none"]).mean()
    assert pooled.estimate == pytest.approx(expect)
    assert ea.pooled_effect(res, ea.KIND_ATTACK, placement="after").estimate == pytest.approx((sub["EA16 after"] - sub["none"]).mean())
    ranking = ea.harm_ranking(ea.effects(res, n_boot=50))
    assert list(ranking.stimulus) == sorted(ranking.stimulus, key=lambda s: eff.loc[[c for c in eff.index if c.startswith(s)][0], "diff"])


def test_arousal_correlation_detects_a_planted_trend():
    s = ea.load_stimuli()
    ranked = {k: v.arousal_rank for k, v in s.sentences.items() if v.arousal_rank}
    n, rows = 60, []
    for i in range(n):
        rows.append({"model": "m", "mode": "zero-shot", "task": "t", "item": f"t/0/{i}", "condition": "none", "correct": True})
        for sid, r in ranked.items():  # rank 1 (highest arousal) wrong most often
            rows.append({"model": "m", "mode": "zero-shot", "task": "t", "item": f"t/0/{i}",
                         "condition": f"{sid} before", "correct": (i % 8) < r})
    out = ea.arousal_correlation(ea.label(pd.DataFrame(rows), s), s, n_boot=100)
    assert out["rho"] == pytest.approx(1.0)  # positive: higher arousal, more harm
    assert out["sentences"] == 7 and out["items"] == n


def test_claims_verdicts_on_synthetic_results():
    res = _toy(n=80, harm=0.6, help_=0.6, word=0.6)
    rows = {c.note: c for c in emotion_v2.claims(res)}
    assert rows["attack"].verdict == "holds" and rows["attack"].direction == "decrease"
    assert rows["word"].verdict == "holds"
    assert rows["positive"].verdict == "holds"
    assert rows["attack"].level == pytest.approx(1 - 0.05 / emotion_v2.N_CLAIMS)
    assert rows["attack"].resolvable > 0 and rows["attack"].unit == "points"
    assert rows["attack"].resolvable >= (rows["attack"].high - rows["attack"].low) / 2
    # meta equivalence: identical outcomes -> holds; meta always wrong where stimuli right -> contradicted
    items = [f"t/0/{i}" for i in range(200)]
    real = pd.DataFrame([{"model": "m", "mode": "zero-shot", "item": it, "condition": c, "correct": i % 2 == 0}
                         for i, it in enumerate(items) for c in ("EP01", "EP02")])
    same = pd.DataFrame([{"model": "m", "mode": "zero-shot", "item": it, "condition": "meta (positive)",
                          "correct": i % 2 == 0} for i, it in enumerate(items)])
    worse = same.assign(correct=False)
    c_same = emotion_v2.claims(res, same, real, averaged=("EP01", "EP02"))[-1]
    assert c_same.note == "meta" and c_same.direction == "equivalent" and c_same.margin == pytest.approx(10)
    assert c_same.verdict == "holds"  # no difference on any item: the interval is [0, 0]
    assert c_same.resolvable > 0  # ... which does not mean that any difference would have been seen
    assert emotion_v2.claims(res, worse, real, averaged=("EP01", "EP02"))[-1].verdict == "contradicted"
    noisy = same.assign(correct=[(i % 2 == 0) != (i % 20 in (1, 2)) for i in range(200)])  # +1 and -1 flips
    assert emotion_v2.claims(res, noisy, real, averaged=("EP01", "EP02"))[-1].verdict == "holds"


# ------------------------------------------------------------------------------------------
# Decode: logit lens and soft prompts on a tiny random model
# ------------------------------------------------------------------------------------------

def test_logit_lens_last_layer_equals_the_models_logits(tiny):
    ids = tiny.tokenizer("Your friend Bob is sick.", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        own = tiny.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    hs = ed.hidden_states(tiny, ed.embed(tiny, ids))
    assert len(hs) == ed.n_layers(tiny) + 1 == 4
    lens = ed._head_logits(tiny, hs[-1][-1:])[0]
    assert torch.allclose(lens, own, atol=1e-5)
    # one vector alone (the meta-prompt read-out): the last row is the model's own prediction for it
    table = ed.logit_lens(tiny, {"v": ed.embed(tiny, ids)[-1]}, layers=[0, -1], top_k=3, prefix="none")
    with torch.inference_mode():
        alone = torch.softmax(tiny.model(input_ids=torch.tensor([ids[-1:]])).logits[0, -1].float(), -1)
    top = torch.topk(alone, 3)
    assert list(table.layer) == [0, 3]
    assert table.iloc[1]["tokens"] == [tiny.tokenizer.decode([int(i)]) for i in top.indices]
    assert np.allclose(table.iloc[1]["probs"], top.values.numpy(), atol=1e-5)
    assert sum(table.iloc[1]["probs"]) <= 1 + 1e-6


def test_layer_index_outside_the_model_is_refused(tiny):
    with pytest.raises(ed.DecodeError, match=r"allowed: 0\.\.3 \(0 = input embeddings\) or -1\.\.-4"):
        ed.logit_lens(tiny, {"v": torch.zeros(32)}, layers=[4])
    with pytest.raises(ed.DecodeError, match="allowed: 0..3"):
        ed.check_layers(tiny, [-5])
    assert ed.check_layers(tiny, [-1, 0, 2]) == [3, 0, 2]


def test_soft_prompt_equal_to_a_token_embedding_reproduces_that_token(tiny):
    left = tiny.tokenizer("Instruction: Sum the two given numbers.", add_special_tokens=False)["input_ids"]
    right = tiny.tokenizer("\nInput: 12 30\nAnswer:", add_special_tokens=False)["input_ids"]
    token = tiny.tokenizer(" sick", add_special_tokens=False)["input_ids"][:1]
    ids = torch.tensor([left + token + right])
    x = torch.cat([ed.embed(tiny, left), ed.embed(tiny, token), ed.embed(tiny, right)])[None]
    with torch.inference_mode():
        a = tiny.model(input_ids=ids).logits
        b = tiny.model(inputs_embeds=x).logits
    assert torch.equal(a, b)
    soft = ed.greedy_from_embeddings(tiny, [x[0]], max_new_tokens=6, stop_at_newline=False)
    plain = tiny.generate([tiny.tokenizer.decode(ids[0])], lm.DecodeConfig(max_new_tokens=6, chat=False, stop_at_newline=False),
                          use_cache=False, prefix_cache=False)
    with torch.inference_mode():
        ref = tiny.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                  eos_token_id=tiny._eos, pad_token_id=tiny.tokenizer.pad_token_id)
    assert soft[0] == tiny.tokenizer.decode(ref[0, ids.shape[1]:], skip_special_tokens=True).strip()
    assert isinstance(plain[0], str)
    # batched with left padding gives the same as one at a time
    rows = [x[0], torch.cat([ed.embed(tiny, left), ed.embed(tiny, right)])]
    batched = ed.greedy_from_embeddings(tiny, rows, max_new_tokens=5, batch_size=2)
    single = [ed.greedy_from_embeddings(tiny, [r], max_new_tokens=5)[0] for r in rows]
    assert batched == single


def test_meta_vector_and_soft_evaluation_mechanics(tiny):
    texts = ["This is very important to my career.", "Are you sure?"]
    meta = ed.meta_vector(tiny, texts)
    expect = torch.stack([ed.embed(tiny, ed.stimulus_ids(tiny, t)).mean(0) for t in texts]).mean(0)
    assert torch.allclose(meta, expect)
    cfg = ep.EvalConfig(tasks=("sum",), conditions=("none",), modes=("zero-shot",), n_samples=2, max_new_tokens=3)
    grid = ed.slot_grid(tiny, cfg)
    assert all(ed.SLOT not in l + r for l, r in zip(grid.left, grid.right))
    res = ed.evaluate_soft(tiny, cfg, [ed.SoftInsert("none"), ed.SoftInsert("meta", vectors=meta),
                                       ed.text_insert(tiny, "EP02", texts[0])])
    assert set(res.condition) == {"none", "meta", "EP02"} and len(res) == 6 and res.correct.dtype == bool
    with pytest.raises(ed.DecodeError, match="unique"):
        ed.evaluate_soft(tiny, cfg, [ed.SoftInsert("a"), ed.SoftInsert("a")])
    sim = ed.representation_similarity(tiny, {"EP02": texts[0], "EP04": texts[1]},
                                       {"EA01": "Your friend Bob is sick.", "EA16": "A baby is crying sadly."})
    assert len(sim) == 4 and sim["centroids (raw)"].between(-1, 1).all()
    pre = ed.prefix_ids(tiny, "chat")
    assert tiny.tokenizer.decode(pre) == "<user>"  # the chat template up to the user's message
    with pytest.raises(ed.DecodeError, match="allowed: chat, bos, none"):
        ed.prefix_ids(tiny, "system")


def test_attack_evaluation_on_the_tiny_model(tiny):
    cfg = ea.AttackConfig(tasks=("sum", "larger_animal"), modes=("zero-shot",), attacks=("EA01",),
                          positive=("EP02",), n_samples=2, max_new_tokens=3)
    res = ea.evaluate(tiny, cfg)
    assert set(res.condition) == {"none", "EA01 before", "EA01 after", "EP02", ea.WORD_LEVEL}
    assert len(res[res.condition == ea.WORD_LEVEL]) == 2 and len(res[res.condition == "none"]) == 4
    eff = ea.effects(res, n_boot=20)
    assert set(eff.kind) == {ea.KIND_ATTACK, ea.KIND_POSITIVE, ea.KIND_WORD}


# ------------------------------------------------------------------------------------------
# Visual stimuli: the full-profile code path on a tiny random LLaVA saved in the test
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_vlm_folder(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, PreTrainedTokenizerFast)
    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor  # no torchvision needed
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor as ImageProcessor

    folder = tmp_path_factory.mktemp("tiny-llava")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["Instruction: Sum the two given numbers.", "Input: 12 30\nAnswer: 42"] * 20,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>", "<pad>", "<image>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    template = ("{% for m in messages %}<{{ m['role'] }}>{% for c in m['content'] %}{% if c['type'] == 'image' %}"
                "<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<eos>\n{% endfor %}"
                "{% if add_generation_prompt %}<assistant>{% endif %}")
    processor = LlavaProcessor(image_processor=ImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
                               tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                               chat_template=template, image_token="<image>", num_additional_image_tokens=1)
    config = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                        num_attention_heads=2, image_size=16, patch_size=8, projection_dim=16),
                         text_config=LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                 num_attention_heads=4, num_key_value_heads=2,
                                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
                         image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
                         vision_feature_select_strategy="default")
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_visual_stimuli_folder_and_evaluation(tiny_vlm_folder, tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    (images / "sadness").mkdir(parents=True)
    Image.fromarray((np.random.default_rng(0).random((20, 20, 3)) * 255).astype("uint8")).save(images / "sadness" / "a.png")
    loaded = ea.load_visual_stimuli(images)
    assert list(loaded) == ["sadness"] and loaded["sadness"][0].size == (20, 20)
    (images / "joyful_noise").mkdir()
    with pytest.raises(ea.EmotionAttackError, match="allowed: happiness, sadness"):
        ea.load_visual_stimuli(images)
    with pytest.raises(ea.EmotionAttackError, match="not a folder"):
        ea.load_visual_stimuli(tmp_path / "missing")
    cfg = ep.EvalConfig(tasks=("sum",), conditions=("none",), modes=("zero-shot",), n_samples=2, max_new_tokens=3)
    out = ea.evaluate_visual(str(tiny_vlm_folder), cfg, loaded, dtype="float32", device="cpu")
    assert list(dict.fromkeys(out.condition)) == ["none", "image: sadness #0"] and len(out) == 4
    assert out.correct.dtype == bool and out.output.map(lambda s: isinstance(s, str)).all()
    assert ea.visual_messages("x")[0]["content"][0] == {"type": "image"}
