"""``python -m fmbook bench lm``: the book's generation engine against plain transformers.

The prompts are a fixed set taken from the EmotionPrompt grid (zero- and few-shot, several stimuli,
chat template, the chapter's answer budgets), stored in ``data/lm_bench_prompts.json`` (a test in
``tests/test_emotion_prompt.py`` checks that the file equals what the chapter builds today). Two
settings are timed cold (output cache off):

* ``reference``: plain ``model.generate``, float32 weights, batches of 32 in the file's order, left
  padding, no prefix cache, no per-row stopping beyond what ``generate`` does;
* ``engine``: :func:`fmbook.core.lm.load_engine` (prefix groups, length-sorted batches, rows that
  leave the batch when done, bfloat16 where the CPU has it).

Other machines' work shifts wall-clock times, so the settings run **interleaved**: the prompts are
cut into blocks (each with every kind of prompt) and every block runs through every setting,
alternating which goes first; each setting's time is the sum over blocks. With ``levers`` the
ablations run too (float32 engine, bfloat16 ``generate``, the engine on int8 weights, CTranslate2
int8 when it converts), so
each lever's share is measured, not assumed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from fmbook.core import lm as lmmod

PROMPTS_FILE = Path(__file__).with_name("data") / "lm_bench_prompts.json"
#: How an answer of the fixed set is judged (the EmotionPrompt chapter's extractor and task checks),
#: as ``module:function``; called as ``function(prompt_dict, answer) -> bool``.
SCORER = "fmbook.emotion_prompt:bench_correct"
#: A faster path that changes answers is kept only if its accuracy equals the reference's within
#: this margin (absolute, share of prompts), judged by the 95% paired-bootstrap interval of the
#: difference. Fixed before any run (issue 10: "keep the faster path only if accuracy is unchanged").
ACCURACY_MARGIN = 0.03
DEFAULT_MODELS = ("qwen2.5-coder-0.5b-instruct-gguf", "gemma-3-270m-gguf")
log = logging.getLogger(__name__)


class BenchError(ValueError):
    """A bad bench parameter (the message names it and the allowed values)."""


def load_prompts(path: Path | None = None) -> list[dict]:
    """The fixed prompt set: dicts with ``id, mode, task, condition, messages, text,
    max_new_tokens, stop_at_newline``."""
    return json.loads(Path(path or PROMPTS_FILE).read_text())


def prompts_for(lm: lmmod.CausalLM, prompts: Sequence[dict]) -> list[dict]:
    """The prompts a model answers: chat messages for a chat model; for a base model (no chat
    template) the plain-text few-shot prompts only (zero-shot, a base model continues the text)."""
    if lm.has_chat_template:
        return [dict(p, prompt=p["messages"]) for p in prompts]
    # a base model's answer is the first line (the demonstrations answer in one line)
    return [dict(p, prompt=p["text"], stop_at_newline=True) for p in prompts if p["mode"] == "few-shot"]


def blocks(prompts: Sequence[dict], n_blocks: int) -> list[list[dict]]:
    """Cut ``prompts`` into ``n_blocks`` blocks, each with a share of every (mode, condition)."""
    if n_blocks < 1:
        raise BenchError(f"n_blocks must be >= 1, got {n_blocks}")
    out: list[list[dict]] = [[] for _ in range(n_blocks)]
    kinds: dict[tuple, list[dict]] = {}
    for p in prompts:
        kinds.setdefault((p["mode"], p["task"], p["condition"]), []).append(p)
    i = 0
    for items in kinds.values():  # deal the items of each kind in turn, like cards
        for item in items:
            out[i % n_blocks].append(item)
            i += 1
    return [b for b in out if b]


# --------------------------------------------------------------------------------------------
# Settings: each answers a list of prompt dicts and returns the answers in order
# --------------------------------------------------------------------------------------------

def _by_budget(prompts: Sequence[dict]) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault((p["max_new_tokens"], p["stop_at_newline"]), []).append(i)
    return groups


def reference_answers(lm: lmmod.CausalLM, prompts: Sequence[dict], batch_size: int = 32) -> list[str]:
    """Plain ``model.generate`` in the prompts' order (batches of ``batch_size``, left padding)."""
    out: list[str] = [""] * len(prompts)
    for (budget, newline), idx in _by_budget(prompts).items():
        config = lmmod.DecodeConfig(max_new_tokens=budget, stop_at_newline=newline)
        texts = [lm.render(prompts[i]["prompt"]) for i in idx]
        for start in range(0, len(idx), batch_size):
            answers = lm._generate_batch(texts[start:start + batch_size], config)
            for i, a in zip(idx[start:start + batch_size], answers):
                out[i] = a
    return out


def engine_answers(lm: lmmod.CausalLM, prompts: Sequence[dict], batch_size: int = 32,
                   prefix_cache: bool = True) -> list[str]:
    """:meth:`CausalLM.generate` without the output cache (cold)."""
    out: list[str] = [""] * len(prompts)
    lm._prefix_memo = {}
    for (budget, newline), idx in _by_budget(prompts).items():
        config = lmmod.DecodeConfig(max_new_tokens=budget, stop_at_newline=newline)
        answers = lm.generate([prompts[i]["prompt"] for i in idx], config, batch_size=batch_size,
                              use_cache=False, prefix_cache=prefix_cache)
        for i, a in zip(idx, answers):
            out[i] = a
    return out


class CT2Setting:
    """CTranslate2 (``int8`` on CPU) on the model's converted folder; ``error`` says why not."""

    def __init__(self, lm: lmmod.CausalLM, folder: Path, compute_type: str = "int8", threads: int = 2):
        self.lm, self.error, self.generator = lm, None, None
        try:
            import ctranslate2
            from ctranslate2.converters import TransformersConverter

            from fmbook.core.paths import atomic_folder, cache_dir

            target = cache_dir() / "ct2" / f"{Path(folder).name}-{compute_type}"
            if not (target / "model.bin").is_file():
                with atomic_folder(target, replace=False) as staging:
                    TransformersConverter(str(folder)).convert(str(staging), quantization=compute_type, force=True)
            self.generator = ctranslate2.Generator(str(target), device="cpu", compute_type=compute_type,
                                                   intra_threads=threads)
        except Exception as exc:  # an architecture CTranslate2 does not know, a missing package
            self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"

    def __call__(self, prompts: Sequence[dict], batch_size: int = 32) -> list[str]:
        tok = self.lm.tokenizer
        out: list[str] = [""] * len(prompts)
        end = [tok.convert_ids_to_tokens(i) for i in self.lm._eos]
        for (budget, newline), idx in _by_budget(prompts).items():
            config = lmmod.DecodeConfig(max_new_tokens=budget, stop_at_newline=newline)
            tokens = [tok.convert_ids_to_tokens(self.lm._ids(self.lm.render(prompts[i]["prompt"]))) for i in idx]
            order = sorted(range(len(idx)), key=lambda j: len(tokens[j]))
            for start in range(0, len(order), batch_size):
                part = order[start:start + batch_size]
                res = self.generator.generate_batch([tokens[j] for j in part], max_length=budget,
                                                    sampling_topk=1, include_prompt_in_result=False,
                                                    end_token=end)
                for j, r in zip(part, res):
                    out[idx[j]] = self.lm._finish(tok.decode(r.sequences_ids[0], skip_special_tokens=True), config)
        return out


# --------------------------------------------------------------------------------------------
# The bench
# --------------------------------------------------------------------------------------------

@dataclass
class Setting:
    label: str
    answer: Callable[[Sequence[dict]], list[str]]
    what: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    answers: list[str] = field(default_factory=list)


def agreement(answers: Sequence[str], reference: Sequence[str]) -> float:
    """Share of prompts whose answer is identical (string equality) to the reference's."""
    if len(answers) != len(reference) or not answers:
        raise BenchError(f"agreement needs two equal, non-empty lists, got {len(answers)} and {len(reference)}")
    return sum(a == b for a, b in zip(answers, reference)) / len(answers)


def load_scorer(spec: str = SCORER) -> Callable[[dict, str], bool]:
    """The function named ``module:function``."""
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def accuracy_change(correct: Sequence[bool], reference_correct: Sequence[bool],
                    margin: float = ACCURACY_MARGIN, seed: int = 0) -> dict:
    """Accuracy of a setting minus the reference's on the same prompts: the paired-bootstrap 95%
    interval and whether it lies within ``±margin`` (``holds``), outside it (``contradicted``) or
    neither (``not resolved``), by :func:`fmbook.core.claims.decide`."""
    from fmbook.core.claims import decide
    from fmbook.core.stats import paired_bootstrap

    interval = paired_bootstrap([float(c) for c in correct], [float(c) for c in reference_correct], seed=seed)
    return {"accuracy": sum(correct) / len(correct), "change": interval.estimate, "low": interval.low,
            "high": interval.high, "margin": margin,
            "equivalent": decide(interval.low, interval.high, "equivalent", 0.0, margin)}


def run_settings(settings: Sequence[Setting], prompts: Sequence[dict], n_blocks: int = 1) -> None:
    """Answer ``prompts`` with every setting, block by block, rotating which setting goes first."""
    parts = blocks(prompts, n_blocks)
    order_all = [p["id"] for b in parts for p in b]
    answers = {s.label: {} for s in settings}
    for b, part in enumerate(parts):
        k = b % len(settings)
        for s in list(settings[k:]) + list(settings[:k]):
            start, cpu = time.perf_counter(), time.process_time()
            got = s.answer(part)
            s.seconds += time.perf_counter() - start
            s.cpu_seconds += time.process_time() - cpu
            answers[s.label].update({p["id"]: a for p, a in zip(part, got)})
            log.info("block %d/%d, %s: %.1f s", b + 1, len(parts), s.label, time.perf_counter() - start)
    for s in settings:
        s.answers = [answers[s.label][i] for i in order_all]


def bench_model(name: str, items: int | None = None, batch_size: int = 32, n_blocks: int = 1,
                levers: bool = False, threads: int = 2, prompts_file: Path | None = None,
                scorer: str | None = SCORER) -> dict:
    """Time the reference and the engine (and with ``levers`` the ablations) on one model.

    Returns a JSON-ready record: per setting prompts/s, seconds, share of answers identical to the
    reference's, per mode; the ratio engine / reference.
    """
    import torch

    torch.set_num_threads(threads)
    reference = lmmod.load_causal_lm(name, dtype="float32", verbose=False)
    engine = lmmod.load_engine(name, verbose=False)
    for m in (reference, engine):
        m.cache = None
    prompts = prompts_for(reference, load_prompts(prompts_file))
    if items:  # the first ``items`` test items of every (mode, task, condition)
        prompts = [p for p in prompts if p["item"] < items]
    settings = [
        Setting("reference", lambda ps: reference_answers(reference, ps, batch_size),
                f"transformers generate, float32, batch {batch_size}, left padding, prompts in file order"),
        Setting("engine", lambda ps: engine_answers(engine, ps, batch_size),
                f"the book's engine ({engine.dtype}, shared prefixes, length-sorted, rows leave when done)"),
    ]
    notes = {}
    if levers:
        settings += [
            Setting("float32, length-sorted generate", lambda ps: engine_answers(reference, ps, batch_size, False),
                    "transformers generate, float32, prompts sorted by length"),
            Setting("float32 engine", lambda ps: engine_answers(reference, ps, batch_size, True),
                    "the engine's batching on float32 weights (prefix groups, rows leave when done)"),
            Setting(f"{engine.dtype}, length-sorted generate", lambda ps: engine_answers(engine, ps, batch_size, False),
                    f"transformers generate on {engine.dtype} weights, prompts sorted by length"),
        ]
        int8 = lmmod.load_causal_lm(name, dtype="float32", quantize="int8-dynamic", verbose=False)
        int8.cache = None
        settings.append(Setting("int8 engine", lambda ps: engine_answers(int8, ps, batch_size, True),
                                "the engine's batching on PyTorch dynamic int8 linear layers (weights int8, "
                                "activations quantized per batch)"))
        folder = lmmod._converted_dir(name) if name in lmmod.assets.ASSETS else Path(name)
        ct2 = CT2Setting(reference, folder, threads=threads)
        if ct2.generator is not None:
            settings.append(Setting("CTranslate2 int8", lambda ps: ct2(ps, batch_size),
                                    "CTranslate2 Generator, int8 weights, length-sorted batches"))
        else:
            notes["CTranslate2 int8"] = ct2.error
    run_settings(settings, prompts, n_blocks)
    ref = settings[0]
    rows = []
    ordered = _ordered(prompts, n_blocks)
    judge = load_scorer(scorer) if scorer and all("answer" in p for p in prompts) else None
    ref_correct = [judge(p, a) for p, a in zip(ordered, ref.answers)] if judge else None
    for s in settings:
        row = {"setting": s.label, "what": s.what, "prompts": len(prompts), "seconds": round(s.seconds, 2),
               "prompts_per_s": len(prompts) / s.seconds if s.seconds else None,
               "speedup": ref.seconds / s.seconds if s.seconds else None,
               "cpu_seconds": round(s.cpu_seconds, 2),
               "cpu_speedup": ref.cpu_seconds / s.cpu_seconds if s.cpu_seconds else None,
               "identical_to_reference": agreement(s.answers, ref.answers)}
        for mode in ("zero-shot", "few-shot"):
            idx = [i for i, p in enumerate(_ordered(prompts, n_blocks)) if p["mode"] == mode]
            if idx:
                row[f"identical_{mode}"] = agreement([s.answers[i] for i in idx], [ref.answers[i] for i in idx])
        if judge:
            row.update({f"accuracy_{k}": v for k, v in accuracy_change(
                [judge(p, a) for p, a in zip(ordered, s.answers)], ref_correct).items()})
        rows.append(row)
    eng = next(r for r in rows if r["setting"] == "engine")
    differing = [{"id": p["id"], "reference": a, "engine": b}
                 for p, a, b in zip(ordered, ref.answers, settings[1].answers) if a != b]
    return {"kind": "lm-bench", "model": name, "model_id": reference.model_id,
            "engine_dtype": engine.dtype, "threads": threads, "batch_size": batch_size, "blocks": n_blocks,
            "prompts": len(prompts),
            "modes": {m: sum(p["mode"] == m for p in prompts) for m in ("zero-shot", "few-shot")},
            "conditions": sorted({p["condition"] for p in prompts}),
            "ratio": eng["speedup"], "identical": eng["identical_to_reference"], "settings": rows,
            "accuracy_margin": ACCURACY_MARGIN if judge else None,
            "differing_answers": differing[:20], "notes": notes,
            "cpu_ratio": eng["cpu_speedup"],
            "measured": "reference and engine interleaved block by block on a shared machine; "
                        "ratios are fairer than absolute prompts/s; CPU seconds count this process only"}


def _ordered(prompts: Sequence[dict], n_blocks: int) -> list[dict]:
    return [p for b in blocks(prompts, n_blocks) for p in b]


def result_file(name: str, profile: str = "local", root: Path | None = None) -> Path:
    """``results/bench/<profile>/lm_<model>.json``."""
    from fmbook.core.paths import BENCH_FOLDER, results_dir

    return (root or results_dir()) / BENCH_FOLDER / profile / f"lm_{Path(name).name.replace('/', '_')}.json"


def write_result(record: dict, profile: str = "local", root: Path | None = None,
                 provenance: dict | None = None) -> Path:
    """Write ``record`` (plus provenance and time) as the model's bench results file."""
    import os
    import tempfile

    path = result_file(record["model"], profile, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**record, "profile": profile, "provenance": provenance or {},
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, default=str)
        handle.write("\n")
    os.replace(tmp, path)
    return path


def read_results(profile: str | None = None, root: Path | None = None) -> list[dict]:
    """Every bench results file (of ``profile``), newest layout first by model name."""
    from fmbook.core.paths import BENCH_FOLDER, results_dir

    base = (root or results_dir()) / BENCH_FOLDER
    pattern = f"{profile}/lm_*.json" if profile else "*/lm_*.json"
    return [json.loads(p.read_text()) for p in sorted(base.glob(pattern))] if base.is_dir() else []


def summary_sentence(record: dict) -> str:
    """One model's result in words: prompts, machine, date, the engine's ratio, identical answers and
    (when judged) its accuracy change with the verdict on the margin."""
    hw = record.get("provenance", {}).get("hardware", {})
    text = (f"On {record['model']} ({record['prompts']} prompts: {record['modes']['zero-shot']} zero-shot, "
            f"{record['modes']['few-shot']} few-shot; {record['threads']} threads on {hw.get('cpu', 'an unnamed CPU')}, "
            f"measured {record['written_at'][:10]}) the engine answered {record['ratio']:.1f} times as many prompts "
            f"per second as the reference, and {100 * record['identical']:.1f}% of its answers are identical to "
            f"the reference's")
    engine = next(s for s in record["settings"] if s["setting"] == "engine")
    if "accuracy_change" not in engine:
        return text + "."
    return (text + f"; its accuracy differs from the reference's by {100 * engine['accuracy_change']:+.1f} points "
            f"(95% interval {100 * engine['accuracy_low']:+.1f} to {100 * engine['accuracy_high']:+.1f}; verdict on "
            f"'the same accuracy within {100 * record['accuracy_margin']:.0f} points': {engine['accuracy_equivalent']}).")


def settings_table(records: Sequence[dict]):
    """What each setting is, once per setting (the summary table leaves it out to stay narrow)."""
    import pandas as pd

    seen = {s["setting"]: s["what"] for r in records for s in r["settings"]}
    return pd.DataFrame({"setting": list(seen), "what": list(seen.values())})


def summary_table(records: Sequence[dict]):
    """One row per (model, setting): prompts/s, speed-up over the reference, identical answers,
    accuracy and its change (what each setting is: :func:`settings_table`)."""
    import pandas as pd

    rows = []
    for r in records:
        for s in r["settings"]:
            rows.append({"model": r["model"], "setting": s["setting"], "prompts": s["prompts"],
                         "prompts/s": s["prompts_per_s"], "× reference": s["speedup"],
                         "× reference (CPU time)": s.get("cpu_speedup"),
                         "identical answers": s["identical_to_reference"],
                         "accuracy": s.get("accuracy_accuracy"),
                         "accuracy change, points (95% interval)": (
                             f"{100 * s['accuracy_change']:+.1f} [{100 * s['accuracy_low']:+.1f}, "
                             f"{100 * s['accuracy_high']:+.1f}]"
                             if s.get("accuracy_change") is not None and s["setting"] != "reference" else None),
                         "same accuracy (±margin)": (s.get("accuracy_equivalent")
                                                     if s["setting"] != "reference" else None)})
    return pd.DataFrame(rows)
