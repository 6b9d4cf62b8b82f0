"""Offline evaluation of culture models on the survey itself.

The paper evaluates on 59 culture-specific classification datasets (offensive language, hate,
stance, ...), none of which installs offline. Here the held-out task is the survey: predict a
culture's answer to (a) held-out *paraphrases* of training questions and (b) held-out *questions*
(leave-questions-out folds). Each model gives a distribution over a question's answer options
(:func:`option_distribution`, one forward pass per prompt), scored three ways:

* ``exact``: the most likely option equals the culture's majority answer;
* ``distance``: ``|predicted - culture's mean| / (scale span)``, 0..1, lower is better;
* ``loglik``: ``sum_k p_culture(k) log q_model(k) + log K`` (nats above a uniform guess), higher is better.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from fmbook.culture_llm.survey import Question, Survey, SurveyError, chat_example

METRICS = ("exact", "distance", "loglik")


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fold:
    """One leave-questions-out fold: training and held-out question ids (disjoint)."""

    index: int
    train: tuple[int, ...]
    test: tuple[int, ...]


def question_folds(q_ids: Sequence[int], n_folds: int = 5, seed: int = 0) -> list[Fold]:
    """Split question ids into ``n_folds`` disjoint test blocks (shuffled with ``seed``); each fold
    trains on the other questions. No question is in both parts of a fold."""
    q_ids = sorted(set(int(q) for q in q_ids))
    if not 2 <= n_folds <= len(q_ids):
        raise SurveyError(f"n_folds must lie in 2..{len(q_ids)} (the number of questions), got {n_folds}")
    order = list(q_ids)
    random.Random(seed).shuffle(order)
    blocks = [sorted(order[i::n_folds]) for i in range(n_folds)]
    return [Fold(i, tuple(sorted(set(q_ids) - set(b))), tuple(b)) for i, b in enumerate(blocks)]


def sample_per_group(frame: pd.DataFrame, key: str, n: int, seed: int = 0) -> pd.DataFrame:
    """At most ``n`` rows of each ``key`` group, drawn with ``seed`` (groups in sorted order)."""
    parts = [g.sample(min(len(g), n), random_state=seed) for _, g in frame.groupby(key, sort=True)]
    return pd.concat(parts) if parts else frame.iloc[:0]


def split_variants(samples: pd.DataFrame, held_out_per_question: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per question, hold out ``held_out_per_question`` augmented variants (drawn with ``seed``)
    for the paraphrase test; the rest may be trained on. Returns (train, held-out)."""
    rng = random.Random(seed)
    test_idx = []
    for _, group in samples.groupby("q_id", sort=True):
        idx = list(group.index)
        rng.shuffle(idx)
        test_idx += idx[:held_out_per_question]
    test = samples.loc[sorted(test_idx)]
    return samples.drop(index=test.index), test


# ---------------------------------------------------------------------------------------------
# The model's distribution over options
# ---------------------------------------------------------------------------------------------

def _forward_last(model, tokenizer, texts: list[str], device: str):
    """Log-probabilities of the next token after each text (left-padded batch, explicit positions)."""
    import torch

    add_special = not (tokenizer.bos_token and any(t.startswith(tokenizer.bos_token) for t in texts))
    rows = [tokenizer(t, add_special_tokens=add_special)["input_ids"] for t in texts]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, width - len(r):] = torch.tensor(r)
        mask[j, width - len(r):] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.inference_mode():
        try:
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                        logits_to_keep=1)
        except TypeError:
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device))
        return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1).cpu().numpy()


def option_distribution(lm, prompts: Sequence[list[dict]], questions: Sequence[Question], batch_size: int = 8,
                        use_cache: bool = True) -> list[np.ndarray]:
    """Each prompt's probability of each option of its question (in ``question.codes`` order).

    An option's probability is that of its answer string followed by anything that does not
    extend it into a longer option: ``P("1") * (1 - P("0" | "1"))`` for "1" on a 1-10 scale. One
    forward pass per prompt gives the first token's distribution; options of several tokens (or
    prefixes of other options) need one more pass per prefix. ``lm`` is a
    :class:`~fmbook.core.lm.CausalLM` (a tuned view from :class:`~fmbook.culture_llm.finetune.tuned`
    works too); results are cached in its output cache.
    """
    from fmbook.core.lm import OutputCache

    if len(prompts) != len(questions):
        raise SurveyError(f"{len(prompts)} prompts but {len(questions)} questions")
    tok = lm.tokenizer
    rendered = [lm.render(list(p)) for p in prompts]
    keys = [OutputCache.key(lm.cache_id, "culture_llm.options", r, {"codes": q.codes}) for r, q in zip(rendered, questions)]
    found = lm.cache.get_many(keys) if (lm.cache and use_cache) else {}
    todo = [i for i, k in enumerate(keys) if k not in found]
    option_ids = {}
    for q in questions:
        if q.q_id not in option_ids:
            option_ids[q.q_id] = [tuple(tok(str(c), add_special_tokens=False)["input_ids"]) for c in q.codes]
    # what each prompt needs: the distribution after the prompt plus after every proper prefix
    needs = []
    for i in todo:
        opts = option_ids[questions[i].q_id]
        prefixes = {o[:j] for o in opts for j in range(len(o))}
        prefixes |= {o for o in opts if any(len(p) > len(o) and p[:len(o)] == o for p in opts)}
        needs += [(i, pre) for pre in sorted(prefixes, key=len)]
    logp: dict[tuple[int, tuple], np.ndarray] = {}
    for s in range(0, len(needs), batch_size):
        chunk = needs[s:s + batch_size]
        texts = [rendered[i] + tok.decode(list(pre)) for i, pre in chunk]
        out = _forward_last(lm.model, tok, texts, lm.device)
        for (i, pre), row in zip(chunk, out):
            logp[(i, pre)] = row
    new = {}
    for i in todo:
        opts = option_ids[questions[i].q_id]
        probs = []
        for o in opts:
            lp = sum(float(logp[(i, o[:j])][o[j]]) for j in range(len(o)))
            longer = [p[len(o)] for p in opts if len(p) > len(o) and p[:len(o)] == o]
            stop = 1.0 - float(np.exp(logp[(i, o)][sorted(set(longer))]).sum()) if longer else 1.0
            probs.append(float(np.exp(lp)) * max(stop, 0.0))
        probs = np.asarray(probs)
        new[keys[i]] = (probs / probs.sum()).tolist() if probs.sum() > 0 else [1 / len(probs)] * len(probs)
    if new and lm.cache and use_cache:
        lm.cache.put_many(new)
    found.update(new)
    return [np.asarray(found[k]) for k in keys]


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

def score_item(q_model: np.ndarray, question: Question, culture_dist: np.ndarray, majority: int) -> dict:
    """The three metrics of one prediction (see the module docstring)."""
    codes = question.codes
    pred = codes[int(np.argmax(q_model))]
    mean = float(np.dot(codes, culture_dist))
    eps = 1e-12
    return {"pred": pred, "exact": float(pred == majority),
            "distance": abs(pred - mean) / max(question.span, 1),
            "loglik": float(np.dot(culture_dist, np.log(np.asarray(q_model) + eps)) + np.log(len(codes)))}


def evaluate(lm, items: pd.DataFrame, survey: Survey, majority: dict[tuple[str, int], int], system: str | None,
             condition: str, batch_size: int = 8) -> pd.DataFrame:
    """Score ``lm`` on ``items`` (columns ``unit, q_id, text, split``); ``system``: ``"culture"`` puts
    the paper's system prompt with the item's culture, ``None`` asks without one (the untuned model)."""
    prompts, qs = [], []
    for unit, q_id, text in zip(items["unit"], items["q_id"], items["text"]):
        q = survey.question(q_id)
        prompts.append(chat_example(unit if system == "culture" else None, text, q))
        qs.append(q)
    dists = option_distribution(lm, prompts, qs, batch_size=batch_size)
    rows = []
    for (_, item), q, d in zip(items.iterrows(), qs, dists):
        cd = survey.distribution(item["unit"], item["q_id"])
        rows.append({**item.to_dict(), "condition": condition,
                     **score_item(d, q, cd, majority[(item["unit"], int(item["q_id"]))])})
    return pd.DataFrame(rows)


def summarize(scores: pd.DataFrame, by: Sequence[str] = ("condition", "unit", "split"), level: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
    """Mean of each metric with a cluster bootstrap interval (clusters: questions, so variants of
    one question count once)."""
    from fmbook.core import stats

    rows = []
    for key, g in scores.groupby(list(by), sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["items"] = len(g)
        row["questions"] = g["q_id"].nunique()
        per_q = g.groupby(["unit", "q_id"])[list(METRICS)].mean()
        for m in METRICS:
            iv = stats.bootstrap_interval(per_q[m].to_numpy(), level=level, seed=seed, n_boot=1000)
            row[m], row[f"{m} low"], row[f"{m} high"] = iv.estimate, iv.low, iv.high
        rows.append(row)
    return pd.DataFrame(rows)


def paired_difference(scores: pd.DataFrame, treated: str, baseline: str, metric: str = "exact",
                      split: str | None = None, level: float = 0.95, seed: int = 0, units: Sequence[str] | None = None):
    """Mean of ``treated - baseline`` over (culture, question) clusters, with a paired bootstrap
    interval; ``units`` restricts to some cultures. Returns a :class:`fmbook.core.stats.Interval`."""
    from fmbook.core import stats

    s = scores if split is None else scores[scores["split"] == split]
    if units is not None:
        s = s[s["unit"].isin(list(units))]
    piv = s.groupby(["unit", "q_id", "condition"])[metric].mean().unstack("condition")
    if treated not in piv or baseline not in piv:
        raise SurveyError(f"conditions {treated!r} and {baseline!r} must both be scored; have {list(piv.columns)}")
    piv = piv[[treated, baseline]].dropna()
    sign = -1.0 if metric == "distance" else 1.0  # report improvements as positive
    return stats.paired_bootstrap(sign * piv[treated].to_numpy(), sign * piv[baseline].to_numpy(),
                                  level=level, seed=seed, n_boot=2000)
