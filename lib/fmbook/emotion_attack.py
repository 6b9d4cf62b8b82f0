"""EmotionAttack: emotional content that *impairs* a model (Li et al., arXiv 2312.11111, ICML 2024).

The paper's V2 of EmotionPrompt adds negative stimuli. Textual EmotionAttack comes in two
families, shown in the paper's overview figure: **negative life events** ("Your friend Bob is
sick.") and **heightened emotional arousal** ("A baby is crying sadly."). A third family of
*positive* stimuli joins EmotionPrompt's two theories: **Maslow's hierarchy of needs** ("You're
safe."). The sentences live in a data file (:data:`STIMULI_FILE`, YAML) with a ``source`` per
sentence, so a reader can replace them; only three are confirmed from the paper's own figure.

What this module adds to :mod:`fmbook.emotion_prompt` is *conditions*, not an evaluation loop:
each attack sentence becomes an :class:`~fmbook.emotion_prompt.ExtraCondition` placed ``before``
or ``after`` the instruction (the paper's placement was not found; both are run and reported), and
the **word-level attack** (our design, the paper's rule was not found) rewrites the test input by
inserting an emotional adjective before each entity (:func:`word_attack`). The prompts, the tasks,
their checkers, the output cache and the evaluation call are EmotionPrompt's.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from fmbook import emotion_prompt as ep
from fmbook.core import stats
from fmbook.emotion_prompt import instruction_induction as ii

STIMULI_FILE = Path(__file__).resolve().parent / "data" / "emotion_v2_stimuli.yaml"
STIMULI_ENV = "FMBOOK_EMOTION_V2_STIMULI"

NEGATIVE_EVENTS = "negative life events"
AROUSAL = "heightened emotional arousal"
MASLOW = "Maslow's hierarchy of needs"
ATTACK_FAMILIES = (NEGATIVE_EVENTS, AROUSAL)
PLACEMENTS = ep.PLACEMENTS  # ("after", "before")
WORD_LEVEL = "word-level"
#: Tasks whose input has entities an adjective can stand before without changing the right answer
#: (the adjective-prefixed answer is accepted too).
WORD_TASKS = ("larger_animal", "singular_to_plural", "negation")

KIND_NONE, KIND_ATTACK, KIND_POSITIVE, KIND_WORD = "none", "attack", "positive", "word-level attack"


class EmotionAttackError(ValueError):
    """A bad parameter (the message names it and the allowed values)."""


# ------------------------------------------------------------------------------------------
# The stimuli (data file)
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sentence:
    """One textual stimulus of V2: an attack (EAxx) or a Maslow stimulus (MSxx)."""

    id: str
    family: str
    text: str
    source: str
    checked: bool = False
    arousal_rank: int | None = None
    level: str | None = None

    @property
    def is_attack(self) -> bool:
        return self.family in ATTACK_FAMILIES


@dataclass(frozen=True)
class StimulusSet:
    sentences: dict[str, Sentence]
    adjectives: tuple[str, ...]
    path: str

    def ids(self, families: Sequence[str] | None = None) -> list[str]:
        return [s.id for s in self.sentences.values() if families is None or s.family in families]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"id": s.id, "family": s.family, "text": s.text, "source": s.source,
                              "confirmed from the paper": s.checked,
                              "arousal rank": s.arousal_rank} for s in self.sentences.values()])


def load_stimuli(path: str | Path | None = None) -> StimulusSet:
    """Read the stimuli YAML (default :data:`STIMULI_FILE`, or ``$FMBOOK_EMOTION_V2_STIMULI``)."""
    import yaml

    path = Path(path or os.environ.get(STIMULI_ENV) or STIMULI_FILE)
    if not path.is_file():
        raise EmotionAttackError(f"stimuli_path={str(path)!r}: no such file")
    data = yaml.safe_load(path.read_text()) or {}
    known = set(ATTACK_FAMILIES) | {MASLOW}
    out: dict[str, Sentence] = {}
    for i, entry in enumerate(data.get("stimuli") or []):
        missing = [k for k in ("id", "family", "text", "source") if not entry.get(k)]
        if missing:
            raise EmotionAttackError(f"{path.name}: stimulus #{i} lacks {', '.join(missing)}")
        if entry["family"] not in known:
            raise EmotionAttackError(f"{path.name}: stimulus {entry['id']} has family {entry['family']!r}; "
                                     f"allowed: {', '.join(sorted(known))}")
        if entry["id"] in out or entry["id"] in ep.CONDITIONS:
            raise EmotionAttackError(f"{path.name}: duplicate or reserved id {entry['id']!r}")
        out[entry["id"]] = Sentence(entry["id"], entry["family"], entry["text"], entry["source"],
                                    bool(entry.get("checked", False)), entry.get("arousal_rank"),
                                    entry.get("level"))
    adjectives = tuple(data.get("word_level_adjectives") or ())
    if not adjectives:
        raise EmotionAttackError(f"{path.name}: word_level_adjectives is empty")
    return StimulusSet(out, adjectives, str(path))


def check_families(families: Sequence[str]) -> tuple[str, ...]:
    bad = [f for f in families if f not in ATTACK_FAMILIES]
    if bad:
        raise EmotionAttackError(f"attack family {bad[0]!r} is unknown; allowed: {', '.join(ATTACK_FAMILIES)}")
    return tuple(families)


def check_placements(placements: Sequence[str]) -> tuple[str, ...]:
    bad = [p for p in placements if p not in PLACEMENTS]
    if bad or not placements:
        raise EmotionAttackError(f"placement {bad[0] if bad else None!r} is not supported; "
                                 f"allowed: {', '.join(PLACEMENTS)}")
    return tuple(placements)


# ------------------------------------------------------------------------------------------
# Word-level attack (our design)
# ------------------------------------------------------------------------------------------

_DETERMINERS = ("the", "a", "an", "my", "your", "his", "her", "our", "their", "this", "that")


def _pick(adjectives: Sequence[str], key: str) -> str:
    return adjectives[zlib.crc32(key.encode()) % len(adjectives)]


def _before_subject(sentence: str, adjective: str) -> str:
    words = sentence.split(" ")
    if words and words[0].lower() in _DETERMINERS and len(words) > 1:
        return " ".join([words[0], adjective] + words[1:])
    first = words[0]
    return " ".join([adjective.capitalize(), first[:1].lower() + first[1:]] + words[1:])


def word_attack(task: str, example: ii.Example, adjectives: Sequence[str] | None = None) -> ii.Example:
    """Insert an emotional adjective before each entity of the test input (our word-level design).

    ``larger_animal``: before both animals ("cat, horse" -> "sad cat, furious horse"), and the
    adjective-prefixed animal is accepted as well as the bare one; ``singular_to_plural``: before
    the noun, the plural with or without the adjective is accepted; ``negation``: before the
    sentence's subject, in the input and in every accepted negation. The adjective is chosen per
    entity by a hash of the entity, so the attack is the same in every run.
    """
    adjectives = tuple(adjectives or load_stimuli().adjectives)
    if task not in WORD_TASKS:
        raise EmotionAttackError(f"word-level attack: task {task!r} is not supported; allowed: {', '.join(WORD_TASKS)}")
    if task == "larger_animal":
        names = [n.strip() for n in example.input.split(",")]
        adj = {n: _pick(adjectives, n) for n in names}
        new_input = ", ".join(f"{adj[n]} {n}" for n in names)
        accepted = (*example.accepted, f"{adj.get(example.answer, '')} {example.answer}".strip())
        return ii.Example(new_input, example.answer, accepted)
    if task == "singular_to_plural":
        a = _pick(adjectives, example.input)
        accepted = (*example.accepted, f"{a} {example.answer}", *(f"{a} {x}" for x in example.accepted))
        return ii.Example(f"{a} {example.input}", example.answer, accepted)
    a = _pick(adjectives, example.input.split(" ")[0] + example.input)
    return ii.Example(_before_subject(example.input, a), _before_subject(example.answer, a),
                      tuple(_before_subject(x, a) for x in example.accepted))


# ------------------------------------------------------------------------------------------
# Conditions and the evaluation (EmotionPrompt's)
# ------------------------------------------------------------------------------------------

def condition_name(stimulus_id: str, placement: str) -> str:
    """``EA01>``-style names would be cryptic: ``EA01 before`` / ``EA01 after``."""
    return f"{stimulus_id} {placement}"


@dataclass
class AttackConfig:
    """One EmotionAttack grid on EmotionPrompt's tasks (Sec. 2.2 of arXiv 2307.11760 for the setup).

    ``attacks``: ids from the stimuli file (empty: every sentence of ``families``); each is run at
    every ``placements``. ``positive``: EmotionPrompt stimuli (EP01-EP11) and Maslow stimuli (MSxx),
    appended after the instruction as in the paper, on the same items. ``word_level``: the
    word-level attack on the tasks of :data:`WORD_TASKS` among ``tasks``. Sample sizes are ours.
    """

    tasks: tuple[str, ...] = ("sum", "first_word_letter", "singular_to_plural", "larger_animal", "antonyms")
    modes: tuple[str, ...] = ep.MODES
    families: tuple[str, ...] = ATTACK_FAMILIES
    attacks: tuple[str, ...] = ()
    placements: tuple[str, ...] = PLACEMENTS
    word_level: bool = True
    positive: tuple[str, ...] = ()
    n_samples: int = 8
    seeds: tuple[int, ...] = (0,)
    n_demos: int = 5
    max_new_tokens: int = 32
    batch_size: int = 32
    demo_block: int = 1
    stimuli_path: str | None = None
    stimuli: StimulusSet = field(init=False, repr=False)

    def __post_init__(self):
        for name in ("tasks", "modes", "families", "attacks", "placements", "positive", "seeds"):
            setattr(self, name, tuple(getattr(self, name)))
        self.stimuli = load_stimuli(self.stimuli_path)
        check_families(self.families)
        check_placements(self.placements)
        fam_ids = self.stimuli.ids(self.families)
        if not self.attacks:
            self.attacks = tuple(fam_ids)
        for a in self.attacks:
            if a not in fam_ids:
                raise EmotionAttackError(f"attacks: {a!r} is not a sentence of the families {list(self.families)}; "
                                         f"allowed: {', '.join(fam_ids)}")
        maslow = self.stimuli.ids([MASLOW])
        for p in self.positive:
            if p not in ep.STIMULI and p not in maslow:
                raise EmotionAttackError(f"positive: unknown stimulus {p!r}; allowed: "
                                         f"{', '.join([*ep.STIMULI, *maslow])}")
        if self.word_level and not self.word_tasks:
            raise EmotionAttackError(f"word_level=True needs one of the tasks {', '.join(WORD_TASKS)}")
        self.eval_configs()  # validates the rest through EmotionPrompt

    @property
    def word_tasks(self) -> tuple[str, ...]:
        return tuple(t for t in self.tasks if t in WORD_TASKS)

    def extra_conditions(self) -> list[ep.ExtraCondition]:
        s = self.stimuli.sentences
        out = [ep.ExtraCondition(condition_name(a, p), s[a].text, p) for a in self.attacks for p in self.placements]
        out += [ep.ExtraCondition(p, s[p].text, "after") for p in self.positive if p in s]
        return out

    def conditions(self) -> list[str]:
        return [ep.BASELINE, *[e.name for e in self.extra_conditions()],
                *[p for p in self.positive if p in ep.STIMULI]]

    def eval_configs(self) -> list[ep.EvalConfig]:
        """EmotionPrompt grids: the sentence-level one, and the word-level one on :data:`WORD_TASKS`."""
        common = dict(modes=self.modes, n_samples=self.n_samples, seeds=self.seeds, n_demos=self.n_demos,
                      max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, demo_block=self.demo_block)
        out = [ep.EvalConfig(tasks=self.tasks, conditions=tuple(self.conditions()),
                             extra_conditions=tuple(self.extra_conditions()), **common)]
        if self.word_level:
            adjectives = self.stimuli.adjectives

            def word_level_attack(task, example):
                return word_attack(task, example, adjectives)

            out.append(ep.EvalConfig(tasks=self.word_tasks, conditions=(ep.BASELINE, WORD_LEVEL),
                                     extra_conditions=(ep.ExtraCondition(WORD_LEVEL, "", "after", word_level_attack),),
                                     **common))
        return out

    def describe(self) -> dict:
        return {"configs": [ep.config_dict(c) for c in self.eval_configs()], "stimuli_path": Path(self.stimuli.path).name}


def label(results: pd.DataFrame, stimuli: StimulusSet) -> pd.DataFrame:
    """Add ``stimulus``, ``placement``, ``family`` and ``kind`` columns from the condition names."""
    s = stimuli.sentences
    rows = []
    for cond in results["condition"]:
        if cond == ep.BASELINE:
            rows.append((ep.BASELINE, "", "", KIND_NONE))
        elif cond == WORD_LEVEL:
            rows.append((WORD_LEVEL, "input", "word-level (ours)", KIND_WORD))
        elif cond in ep.STIMULI:
            rows.append((cond, "after", ", ".join(ep.STIMULI[cond].groups), KIND_POSITIVE))
        else:
            sid, _, place = cond.partition(" ")
            fam = s[sid].family if sid in s else "?"
            rows.append((sid, place or "after", fam, KIND_ATTACK if sid in s and s[sid].is_attack else KIND_POSITIVE))
    out = results.copy()
    out["stimulus"], out["placement"], out["family"], out["kind"] = zip(*rows) if rows else ([], [], [], [])
    return out


def evaluate(lm, cfg: AttackConfig, base_few_shot_only: bool = True, progress: bool = False) -> pd.DataFrame:
    """Every grid of ``cfg`` through :func:`fmbook.emotion_prompt.evaluate` (batched, cached), labelled.

    The word-level grid's ``none`` rows repeat items of the sentence grid; they are dropped."""
    frames = []
    for i, c in enumerate(cfg.eval_configs()):
        r = ep.evaluate(lm, ep.config_for(lm, c, base_few_shot_only), progress=progress)
        frames.append(r if i == 0 else r[r.condition != ep.BASELINE])
    return label(pd.concat(frames, ignore_index=True), cfg.stimuli)


def evaluate_models(model_names: Sequence[str], cfg: AttackConfig, base_few_shot_only: bool = True,
                    dtype: str = "auto", device: str = "cpu", progress: bool = True):
    """:func:`evaluate` every model in turn (loaded once each); answers and one record per model
    (:func:`fmbook.emotion_prompt.evaluate_each`). ``dtype="auto"``: the book's engine."""
    return ep.evaluate_each(model_names, lambda model: evaluate(model, cfg, base_few_shot_only, progress),
                            dtype, device)


# ------------------------------------------------------------------------------------------
# Analysis
# ------------------------------------------------------------------------------------------

def paired_differences(results: pd.DataFrame, conditions: Sequence[str] | None = None) -> pd.DataFrame:
    """Per (model, mode, item): correct(condition) - correct(none) for every condition, wide.

    Only items answered under ``none`` and the condition enter (the word-level grid covers fewer tasks)."""
    wide = results.pivot_table(index=["model", "mode", "task", "item"], columns="condition", values="correct",
                               aggfunc="first").astype(float)
    conds = [c for c in (conditions or wide.columns) if c != ep.BASELINE and c in wide.columns]
    return wide[conds].sub(wide[ep.BASELINE], axis=0)


def effects(results: pd.DataFrame, level: float = 0.95, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (model, mode, condition): accuracy with and without, the paired difference with
    a t interval over items, the relative change (%) with a paired-bootstrap interval, and what a
    sample of this size could resolve (:func:`fmbook.core.stats.minimum_detectable_difference`,
    paired, at the observed share of discordant items). Intervals are clipped to [-1, 1]."""
    rows = []
    meta = results.drop_duplicates("condition").set_index("condition")
    for (model, mode), part in results.groupby(["model", "mode"], sort=False):
        wide = part.pivot_table(index="item", columns="condition", values="correct", aggfunc="first").astype(float)
        for cond in [c for c in dict.fromkeys(part.condition) if c != ep.BASELINE]:
            pair = wide[[ep.BASELINE, cond]].dropna()
            base, treat = pair[ep.BASELINE].to_numpy(), pair[cond].to_numpy()
            n = len(pair)
            diff = stats.t_interval(treat - base, level) if n > 1 else stats.Interval(math.nan, math.nan, math.nan, level)
            p0 = float(base.mean()) if n else math.nan
            rel = (stats.paired_bootstrap(treat, base, lambda x, y: 100 * (x.mean() - y.mean()) / y.mean()
                                          if y.mean() > 0 else math.nan, level, n_boot, seed)
                   if n and base.mean() > 0 else None)
            disc = float(np.mean(treat != base)) if n else math.nan
            rows.append({"model": model, "mode": mode, "condition": cond,
                         "stimulus": meta.loc[cond, "stimulus"], "placement": meta.loc[cond, "placement"],
                         "family": meta.loc[cond, "family"], "kind": meta.loc[cond, "kind"], "n": n,
                         "acc_none": p0, "acc": float(treat.mean()) if n else math.nan,
                         "diff": diff.estimate, "diff_low": max(-1.0, diff.low), "diff_high": min(1.0, diff.high),
                         "rel_%": rel.estimate if rel else math.nan,
                         "rel_low": rel.low if rel else math.nan, "rel_high": rel.high if rel else math.nan,
                         "discordant": disc,
                         "mdd": stats.minimum_detectable_difference(p0, n, level, discordance=max(disc, 1 / n))
                         if n else math.nan})
    return pd.DataFrame(rows)


def pooled_effect(results: pd.DataFrame, kind: str, level: float = 0.95,
                  placement: str | None = None) -> stats.Interval:
    """Mean over the conditions of ``kind`` (per item) minus ``none``, t interval over items
    (units: model x mode x item). The unit of the estimate is accuracy (0-1)."""
    sel = results[(results.kind == kind) & ((results.placement == placement) if placement else True)]
    if sel.empty:
        return stats.Interval(math.nan, math.nan, math.nan, level, "no data", 0)
    d = paired_differences(results, list(dict.fromkeys(sel.condition)))
    per_item = d.mean(axis=1, skipna=True).dropna().to_numpy()
    if len(per_item) < 2:
        return stats.Interval(float(per_item.mean()) if len(per_item) else math.nan, math.nan, math.nan, level, "t", len(per_item))
    iv = stats.t_interval(per_item, level)  # a difference of accuracies lies in [-1, 1]
    return stats.Interval(iv.estimate, max(-1.0, iv.low), min(1.0, iv.high), iv.level, iv.method + ", clipped to [-1, 1]", iv.n)


def harm_ranking(eff: pd.DataFrame) -> pd.DataFrame:
    """Attack sentences ordered by their mean accuracy change (over models, modes, placements)."""
    att = eff[eff.kind == KIND_ATTACK]
    g = att.groupby(["stimulus", "family"], sort=False).agg(diff=("diff", "mean"), settings=("diff", "size"),
                                                             items=("n", "sum")).reset_index()
    return g.sort_values("diff").reset_index(drop=True)


def arousal_correlation(results: pd.DataFrame, stimuli: StimulusSet, level: float = 0.95,
                        n_boot: int = 1000, seed: int = 0) -> dict:
    """Does a higher arousal rank predict more harm? Spearman correlation between the arousal rank
    (1 = highest) and the accuracy change of each ranked sentence, with an interval from resampling
    items (the same resampled items for every sentence). A *positive* rho means: higher arousal
    (smaller rank number) goes with a lower accuracy change, i.e. more harm."""
    from scipy.stats import spearmanr

    ranked = {s.id: s.arousal_rank for s in stimuli.sentences.values() if s.arousal_rank is not None}
    conds = [c for c in dict.fromkeys(results.condition) if c.split(" ")[0] in ranked]
    if not conds:
        return {"rho": math.nan, "low": math.nan, "high": math.nan, "sentences": 0, "items": 0}
    d = paired_differences(results, conds)
    by_sentence = pd.DataFrame({sid: d[[c for c in conds if c.split(" ")[0] == sid]].mean(axis=1)
                                for sid in dict.fromkeys(c.split(" ")[0] for c in conds)}).dropna()
    ranks = np.array([ranked[s] for s in by_sentence.columns], dtype=float)
    x = by_sentence.to_numpy()

    def rho(rows):
        m = rows.mean(axis=0)
        return float(spearmanr(ranks, m).statistic) if np.ptp(m) > 0 else math.nan

    est = rho(x)
    rng = np.random.default_rng(seed)
    boots = np.array([rho(x[rng.integers(0, len(x), len(x))]) for _ in range(n_boot)])
    boots = boots[~np.isnan(boots)]
    alpha = 1 - level
    low, high = (np.quantile(boots, [alpha / 2, 1 - alpha / 2]) if len(boots) else (math.nan, math.nan))
    return {"rho": est, "low": float(low), "high": float(high), "sentences": int(x.shape[1]), "items": int(x.shape[0]),
            "per_sentence": {s: float(v) for s, v in zip(by_sentence.columns, x.mean(axis=0))},
            "ranks": {s: int(r) for s, r in zip(by_sentence.columns, ranks)}}


def cell_sizes(eff: pd.DataFrame) -> dict:
    """How many items one (model, mode, condition) cell rests on, and the smallest paired accuracy
    difference it resolves (median over cells)."""
    return {"items_per_cell_min": int(eff["n"].min()), "items_per_cell_max": int(eff["n"].max()),
            "mdd_median": float(eff["mdd"].median()), "cells": int(len(eff))}


# ------------------------------------------------------------------------------------------
# Visual stimuli (full profile only: a generative vision-language model by hub id)
# ------------------------------------------------------------------------------------------

#: Image labels of the paper's overview figure: visual EmotionAttack (heightened arousal) and visual
#: EmotionPrompt (Maslow's hierarchy). The images themselves and their source were not found.
VISUAL_ATTACK_LABELS = ("happiness", "sadness", "fear", "disgust", "anger", "surprise")
VISUAL_PROMPT_LABELS = ("sexy man", "money", "fortress", "sexy woman", "honor")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def load_visual_stimuli(folder: str | Path, labels: Sequence[str] = VISUAL_ATTACK_LABELS + VISUAL_PROMPT_LABELS) -> dict:
    """Images the reader supplies: ``folder/<label>/*.png|jpg`` (label with ``_`` for spaces).

    Returns ``{label: [PIL images]}`` for the labels found; an unknown sub-folder is refused."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise EmotionAttackError(f"visual_folder={str(folder)!r} is not a folder of images (one sub-folder per "
                                 f"label; allowed labels: {', '.join(labels)})")
    out = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = sub.name.replace("_", " ").lower()
        if label not in labels:
            raise EmotionAttackError(f"visual stimuli: unknown label {sub.name!r}; allowed: {', '.join(labels)}")
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            out[label] = [Image.open(f).convert("RGB") for f in files]
    return out


def visual_messages(text: str, with_image: bool = True) -> list[dict]:
    """One user turn: the image (the stimulus) and then the task's text prompt."""
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def evaluate_visual(model_id: str, cfg: ep.EvalConfig, images: dict, dtype: str = "bfloat16",
                    device: str = "cuda", max_images_per_label: int = 1) -> pd.DataFrame:
    """Accuracy of a chat vision-language model (``AutoModelForImageTextToText`` by hub id or
    folder) on EmotionPrompt's text prompts, with no image (``none``) and with each stimulus image.

    Greedy decoding; the answer is read out of the reply and checked as in EmotionPrompt
    (:func:`fmbook.emotion_prompt.score_outputs`). Runs where the model and the images exist
    (``full``); the offline assets hold no generative vision-language model."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from fmbook.core.lm import DTYPES

    if dtype not in DTYPES:
        raise EmotionAttackError(f"dtype={dtype!r}; allowed: {', '.join(DTYPES)}")
    processor = AutoProcessor.from_pretrained(model_id)
    model = AutoModelForImageTextToText.from_pretrained(model_id, dtype=DTYPES[dtype]).eval().to(device)
    grid = ep.build_grid(replace(cfg, conditions=(ep.BASELINE,)), chat=False)
    stimuli = [(ep.BASELINE, None)] + [(f"image: {label} #{i}", img) for label, imgs in images.items()
                                       for i, img in enumerate(imgs[:max_images_per_label])]
    rows = []
    for cond, img in stimuli:
        for _, r in grid.iterrows():
            messages = visual_messages(r.prompt, with_image=img is not None)
            text = processor.apply_chat_template(messages, add_generation_prompt=True)
            enc = processor(text=[text], images=[img] if img is not None else None, return_tensors="pt").to(device)
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=cfg.max_new_tokens, do_sample=False)
            reply = processor.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()
            rows.append({**{k: r[k] for k in ("mode", "task", "seed", "item", "input", "answer", "_example")},
                         "condition": cond, "output": reply, "model": model_id})
    return ep.score_outputs(pd.DataFrame(rows)).drop(columns=["_example"])
