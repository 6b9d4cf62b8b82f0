"""Causal-LM layer: loading by folder/hub path, refusing unknown names, batched generation (plain
and prefix-cached give the same answers), log-likelihood scoring, the output cache; and, unless
``FMBOOK_SKIP_BIG_MODELS=1``, the real offline Qwen model."""

import os

import pytest
import torch

from conftest import save_tiny_qwen2

from fmbook.core import assets

from fmbook.core import lm

@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A randomly initialised tiny Qwen2 model and a small byte-level BPE tokenizer, saved."""
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    corpus = ["Instruction: Sum the two given numbers.", "Input: 12 30\nAnswer: 42",
              "The plural of mouse is mice.", "Write a word that means the opposite."] * 20
    save_tiny_qwen2(folder, corpus, vocab_size=320)
    return folder



PROMPTS = ["Instruction: Sum the two given numbers.\n\nInput: 12 30\nAnswer:",
           "Instruction: Sum the two given numbers.\n\nInput: 7 5\nAnswer:",
           "Instruction: Sum the two given numbers.\n\nInput: 100 23\nAnswer:",
           "The plural of mouse is"]


def test_unknown_name_lists_known_assets():
    with pytest.raises(lm.LMError, match="known assets: gemma-3-270m-gguf, qwen2.5-coder"):
        lm.load_causal_lm("qwen-0.5b")
    with pytest.raises(lm.LMError, match="is a dataset, not a causal LM"):
        lm.load_causal_lm("fashion-mnist")
    with pytest.raises(lm.LMError, match="allowed: float32, bfloat16, float16"):
        lm.load_causal_lm("org/model", dtype="int4")
    with pytest.raises(lm.LMError, match="max_new_tokens"):
        lm.DecodeConfig(max_new_tokens=0)


def test_hub_path_loads_tiny_random_model(tiny):
    assert tiny.source == "folder" and tiny.has_chat_template
    assert tiny.tokenizer.padding_side == "left"
    out = tiny.generate(PROMPTS, lm.DecodeConfig(max_new_tokens=5, chat=False), batch_size=2, use_cache=False)
    assert len(out) == 4 and all(isinstance(o, str) for o in out)


@pytest.mark.parametrize("chat", [False, True])
def test_prefix_cache_gives_the_same_answers(tiny, chat):
    config = lm.DecodeConfig(max_new_tokens=6, chat=chat, stop_at_newline=False)
    plain = tiny.generate(PROMPTS, config, batch_size=3, use_cache=False, prefix_cache=False)
    cached = tiny.generate(PROMPTS, config, batch_size=3, use_cache=False, prefix_cache=True)
    single = [tiny.generate([p], config, batch_size=1, use_cache=False, prefix_cache=False)[0] for p in PROMPTS]
    assert plain == cached == single


def test_throughput_times_the_engine_and_leaves_it_usable(tiny):
    """``throughput`` empties the prefix memo so the timed call computes its prefixes; the engine must
    still answer afterwards, and the same as an untimed call (a regression: the memo was once reset to
    a value of the wrong type, which only the local profile's throughput cell reached)."""
    config = lm.DecodeConfig(max_new_tokens=4, chat=True)
    tp, timed = tiny.throughput(PROMPTS, batch_size=4, config=config, prefix_cache=True)
    assert tp.n_prompts == len(PROMPTS) and tp.seconds > 0
    assert tiny.generate(PROMPTS, config, batch_size=4, use_cache=False, prefix_cache=True) == timed


def test_render_chat_messages(tiny):
    text = tiny.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert text == "<system>S<eos>\n<user>U<eos>\n<assistant>"
    assert tiny.render("U", chat=False) == "U"


def test_score_batched_equals_single_and_manual(tiny):
    conts = [" 42", " 12", " 123", " mice"]
    batched = tiny.score(PROMPTS, conts, chat=False, batch_size=4, use_cache=False)
    single = [tiny.score([p], [c], chat=False, batch_size=1, use_cache=False)[0] for p, c in zip(PROMPTS, conts)]
    assert batched == pytest.approx(single, abs=1e-4)
    tok = tiny.tokenizer
    p_ids, c_ids = tok(PROMPTS[0])["input_ids"], tok(conts[0], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(tiny.model(torch.tensor([p_ids + c_ids])).logits[0], -1)
    manual = sum(float(logp[len(p_ids) - 1 + i, t]) for i, t in enumerate(c_ids))
    assert batched[0] == pytest.approx(manual, abs=1e-4)
    assert all(s < 0 for s in batched)


def test_output_cache_hit(tiny, monkeypatch):
    config = lm.DecodeConfig(max_new_tokens=4, chat=False)
    first = tiny.generate(PROMPTS, config, batch_size=2)
    assert tiny.stats["generated"] == 4

    def boom(*args, **kwargs):
        raise AssertionError("the model was called although every output is cached")

    monkeypatch.setattr(tiny, "_generate_batch", boom)
    monkeypatch.setattr(tiny, "_generate_rows", boom)
    assert tiny.generate(PROMPTS, config, batch_size=2) == first
    assert tiny.stats["cached"] == 4
    # other decoding settings are another key
    with pytest.raises(AssertionError, match="cached"):
        tiny.generate(PROMPTS, lm.DecodeConfig(max_new_tokens=5, chat=False))


# ---- the real offline model (downloaded and converted once; ~1-3 minutes the first time) ------

QWEN = "qwen2.5-coder-0.5b-instruct-gguf"
GEMMA = "gemma-3-270m-gguf"
_SKIP_BIG = os.environ.get("FMBOOK_SKIP_BIG_MODELS") == "1"


def _can_get(name: str) -> bool:
    return assets.is_ready(name) or os.environ.get("FMBOOK_AUTO_FETCH", "1") != "0"


@pytest.mark.big_model
@pytest.mark.skipif(_SKIP_BIG, reason="FMBOOK_SKIP_BIG_MODELS=1")
@pytest.mark.skipif(not _can_get(QWEN), reason=f"asset {QWEN} not fetched and FMBOOK_AUTO_FETCH=0")
def test_qwen_answers_and_vocabulary(tmp_path):
    model = lm.load_causal_lm(QWEN, verbose=False)
    model.cache = lm.OutputCache(tmp_path / "o.sqlite")
    assert model.has_chat_template and model.n_params > 4e8
    prompts = ["What is 23 + 58? Answer with the number only.", "What is the plural of mouse? One word."]
    out = model.generate(prompts, lm.DecodeConfig(max_new_tokens=12), batch_size=2)
    assert out[0] == "81" and "mice" in out[1].lower()
    plain = model.generate(prompts, lm.DecodeConfig(max_new_tokens=12), batch_size=2, use_cache=False,
                           prefix_cache=False)
    assert plain == out
    enc = model.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        ids = model.model.generate(**enc, max_new_tokens=4, do_sample=False)[0, enc["input_ids"].shape[1]:]
    assert len(ids) > 0 and int(ids.max()) < len(model.tokenizer)
    assert model.tokenizer.decode(ids, skip_special_tokens=True).strip()


@pytest.mark.big_model
@pytest.mark.skipif(_SKIP_BIG, reason="FMBOOK_SKIP_BIG_MODELS=1")
@pytest.mark.skipif(not assets.is_ready(GEMMA), reason=f"asset {GEMMA} not fetched")
def test_gemma_base_continues_text(tmp_path):
    model = lm.load_causal_lm(GEMMA, verbose=False)
    model.cache = lm.OutputCache(tmp_path / "o.sqlite")
    out = model.generate(["Input: cat\nAnswer: cats\n\nInput: dog\nAnswer:"], lm.DecodeConfig(max_new_tokens=4))
    assert isinstance(out[0], str) and out[0]
    s = model.score(["The plural of mouse is"] * 2, [" mice", " banana"])
    assert s[0] > s[1]


# ---- the book's engine against the transformers path -------------------------------------------

VARIED = [
    "Instruction: Sum the two given numbers.\n\nInput: 12 30\nAnswer:",
    "Instruction: Sum the two given numbers.\n\nInput: 7 5\nAnswer:",
    "Instruction: Sum the two given numbers. Are you sure?\n\nInput: 7 5\nAnswer:",
    "Instruction: Sum the two given numbers. Are you sure?\n\nInput: 100 23 and some more words\nAnswer:",
    "Instruction: Write a word that means the opposite.\n\nInput: hot\nAnswer:",
    "The plural of mouse is",
    "Input: 1",
]


@pytest.mark.parametrize("newline", [False, True])
@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_engine_equals_transformers_generate(tiny, newline, batch_size):
    """Same greedy answers from the engine (prefix groups, length sort, rows leaving the batch)
    as from plain ``model.generate`` one prompt at a time, on a fixed set of prompts."""
    config = lm.DecodeConfig(max_new_tokens=12, chat=False, stop_at_newline=newline)
    reference = [tiny.generate([p], config, batch_size=1, use_cache=False, prefix_cache=False)[0] for p in VARIED]
    engine = tiny.generate(VARIED, config, batch_size=batch_size, use_cache=False, prefix_cache=True)
    assert engine == reference


def test_engine_rows_leave_the_batch(tiny, monkeypatch):
    """A row that hits end of sequence stops generating (the batch shrinks) and the others go on."""
    eos = tiny.tokenizer.eos_token_id
    sizes, forced = [], []
    real = tiny._forward

    def spy(**kwargs):
        n = kwargs["input_ids"].shape[0]
        sizes.append(n)
        out = real(**kwargs)
        if n == 3 and not forced:  # the batch's prompt pass: row 0's first token is end of sequence
            out.logits[0, -1, :] = -1e9
            out.logits[0, -1, eos] = 0
            forced.append(True)
        return out

    monkeypatch.setattr(tiny, "_forward", spy)
    rows = [tiny._ids(p) for p in VARIED[:3]]
    out = tiny._generate_rows(rows, lm.DecodeConfig(max_new_tokens=5, chat=False, stop_at_newline=False))
    first = sizes.index(3)
    assert sizes[first + 1:] and all(n == 2 for n in sizes[first + 1:])
    assert out[0] == "" and len(out) == 3


def test_plan_batches_groups_by_prefix_and_sorts_by_length():
    a = [1, 2, 3, 4, 5, 6, 7, 8]
    b = [1, 2, 9, 9, 9, 9, 9, 9]
    rows = [a + [10, 11, 12], b + [10], a + [10], b + [11, 12], a + [11]]
    assert lm.prefix_groups(rows) == [[2, 4, 0], [1, 3]]
    assert lm.plan_batches(rows, 8) == [[2, 4, 0, 1, 3]]  # several groups share a batch
    assert lm.plan_batches(rows, 3) == [[2, 4, 0], [1, 3]]
    assert lm.plan_batches(rows, 2) == [[2, 4], [0], [1, 3]]
    assert lm.plan_batches(rows, 2, share_prefix=False) == [[1, 2], [4, 3], [0]]
    assert lm.common_prefix_length([a, a[:5] + [0]]) == 5
    with pytest.raises(lm.LMError, match="batch_size"):
        lm.plan_batches(rows, 0)


def test_fast_dtype_and_engine(tiny_folder):
    assert lm.fast_dtype("cpu") in ("bfloat16", "float32")
    engine = lm.load_engine(str(tiny_folder), dtype="float32", verbose=False)
    assert engine.prefix_cache and engine.dtype == "float32"


# ---- the bench's bookkeeping (no model) ----------------------------------------------------------

def test_bench_blocks_settings_and_results_file(tmp_path):
    from types import SimpleNamespace

    from fmbook.core import lm_bench

    prompts = lm_bench.load_prompts()
    assert {p["mode"] for p in prompts} == {"zero-shot", "few-shot"} and len({p["id"] for p in prompts}) == len(prompts)
    chat = lm_bench.prompts_for(SimpleNamespace(has_chat_template=True), prompts)
    base = lm_bench.prompts_for(SimpleNamespace(has_chat_template=False), prompts)
    assert len(chat) == len(prompts) and all(p["mode"] == "few-shot" and p["stop_at_newline"] for p in base)
    parts = lm_bench.blocks(chat, 4)
    assert sorted(p["id"] for b in parts for p in b) == sorted(p["id"] for p in chat)
    assert all({p["condition"] for p in b} == {p["condition"] for p in chat} for b in parts)
    calls = []
    ref = lm_bench.Setting("reference", lambda ps: (calls.append("r"), [str(p["id"]) for p in ps])[1], "r")
    eng = lm_bench.Setting("engine", lambda ps: (calls.append("e"), [str(p["id"]) if p["id"] % 10 else "x" for p in ps])[1], "e")
    small = chat[:40]
    lm_bench.run_settings([ref, eng], small, n_blocks=2)
    assert calls == ["r", "e", "e", "r"]  # interleaved, alternating who goes first
    share = lm_bench.agreement(eng.answers, ref.answers)
    assert share == pytest.approx(1 - sum(p["id"] % 10 == 0 for p in small) / len(small))
    with pytest.raises(lm_bench.BenchError):
        lm_bench.agreement([], [])
    record = {"model": "org/m", "model_id": "org/m", "engine_dtype": "bfloat16", "threads": 2, "prompts": 40,
              "modes": {"zero-shot": 40, "few-shot": 0}, "ratio": 2.0, "identical": share,
              "settings": [{"setting": "reference", "what": "r", "prompts": 40, "prompts_per_s": 1.0, "speedup": 1.0,
                            "cpu_speedup": 1.0, "identical_to_reference": 1.0}]}
    path = lm_bench.write_result(record, profile="local", root=tmp_path)
    assert path == tmp_path / "bench" / "local" / "lm_m.json"
    assert lm_bench.read_results("local", root=tmp_path)[0]["ratio"] == 2.0
    assert list(lm_bench.summary_table(lm_bench.read_results(root=tmp_path)).setting) == ["reference"]


def test_bench_sentence_and_settings_table_read_a_record():
    from fmbook.core import lm_bench

    engine = {"setting": "engine", "what": "the book's engine", "accuracy_change": -0.012, "accuracy_low": -0.033,
              "accuracy_high": 0.004, "accuracy_equivalent": "not resolved"}
    record = {"model": "m", "prompts": 4, "modes": {"zero-shot": 2, "few-shot": 2}, "threads": 2,
              "provenance": {"hardware": {"cpu": "CPU X"}}, "written_at": "2026-12-01T12:00:00", "ratio": 3.04,
              "identical": 0.942, "accuracy_margin": 0.03,
              "settings": [{"setting": "reference", "what": "plain generate"}, engine]}
    text = lm_bench.summary_sentence(record)
    assert "3.0 times" in text and "94.2%" in text and "-1.2 points" in text and "-3.3 to +0.4" in text
    assert text.endswith("'the same accuracy within 3 points': not resolved).")
    del engine["accuracy_change"]
    assert lm_bench.summary_sentence(record).endswith("identical to the reference's.")
    table = lm_bench.settings_table([record, record])
    assert list(table["setting"]) == ["reference", "engine"] and table["what"][1] == "the book's engine"
