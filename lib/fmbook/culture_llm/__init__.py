"""CultureLLM (Li et al., arXiv 2402.10946): fine-tuning culture-aware language models on World
Values Survey answers multiplied by semantic data augmentation.

* :mod:`~fmbook.culture_llm.survey`: the 50 seed questions, answer distributions per country and
  culture, labels (majority, rounded mean; the official code's buggy mean for comparison), where
  cultures differ, the paper's chat format;
* :mod:`~fmbook.culture_llm.augment`: step 1 (LLM paraphrases, similarity filter and its threshold),
  step 2 (WordNet synonyms), survivors and diversity;
* :mod:`~fmbook.culture_llm.finetune`: LoRA/QLoRA adapters (the paper's settings as defaults), cached;
* :mod:`~fmbook.culture_llm.evaluate`: held-out paraphrases and held-out questions, three metrics;
* this module: the training sets of each condition and :func:`claims`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from fmbook.core import stats
from fmbook.core.claims import Claim
from fmbook.culture_llm import augment, evaluate, finetune, survey
from fmbook.culture_llm.finetune import LoraSettings, TrainRow
from fmbook.culture_llm.survey import CULTURES, Survey, SurveyError, chat_example, labels, load_survey

__all__ = ["augment", "evaluate", "finetune", "survey", "CULTURES", "Survey", "SurveyError", "load_survey",
           "labels", "chat_example", "LoraSettings", "TrainRow", "DATA_CONDITIONS", "training_rows",
           "test_items", "claims", "DOWNSTREAM"]

#: Training data of the paper's ablation (Section 4.4): which augmentation steps feed the model.
DATA_CONDITIONS: dict[str, tuple[int, ...]] = {"wvs_only": (), "step1_only": (1,), "culturellm": (1, 2)}


def training_rows(units: Sequence[str], q_ids: Sequence[int], samples: pd.DataFrame, label_table: survey.LabelTable,
                  survey_: Survey, steps: Sequence[int] = (1, 2)) -> tuple[list[TrainRow], list[tuple[str, int]]]:
    """Rows in the paper's chat format: for each unit and training question, the seed text and
    the kept augmented texts of ``steps``; the target is the unit's label. Pairs without a label
    (questions a country was not asked) are left out and returned as the second value."""
    labels_ = label_table.as_dict()
    rows, skipped = [], []
    for unit in units:
        for q_id in sorted(q_ids):
            if (unit, q_id) not in labels_:
                skipped.append((unit, q_id))
                continue
            q = survey_.question(q_id)
            texts = [(0, q.text)]
            if steps and len(samples):
                s = samples[(samples["q_id"] == q_id) & samples["step"].isin(list(steps))]
                texts += list(zip(s["step"].astype(int), s["text"]))
            for step, text in texts:
                rows.append(TrainRow(tuple(chat_example(unit, text, q, labels_[(unit, q_id)])), unit, q_id, step))
    return rows, skipped


def test_items(units: Sequence[str], fold: evaluate.Fold, heldout: pd.DataFrame, samples: pd.DataFrame,
               survey_: Survey) -> tuple[pd.DataFrame, list[tuple[str, int]]]:
    """Evaluation items: ``paraphrase`` = the held-out augmented variants of training questions;
    ``question`` = the held-out questions of ``fold`` (seed text and every kept variant). Pairs a
    unit has no answers for are left out and returned."""
    rows, skipped = [], []
    for unit in units:
        for q_id, text in zip(heldout["q_id"], heldout["text"]):
            if q_id in fold.train:
                rows.append({"unit": unit, "q_id": int(q_id), "text": text, "split": "paraphrase"})
        for q_id in fold.test:
            texts = [survey_.question(q_id).text] + list(samples[samples["q_id"] == q_id]["text"])
            rows += [{"unit": unit, "q_id": int(q_id), "text": t, "split": "question"} for t in texts]
    frame = pd.DataFrame(rows, columns=["unit", "q_id", "text", "split"])
    keep = [survey_.has_answers(u, q) for u, q in zip(frame["unit"], frame["q_id"])]
    for u, q in frame[[not k for k in keep]][["unit", "q_id"]].drop_duplicates().itertuples(index=False):
        skipped.append((u, int(q)))
    return frame[keep].reset_index(drop=True), skipped


# ---------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------

#: The comparisons fixed before any run: (treated, baseline, paper's statement, direction).
COMPARISONS = (
    ("one_culturellm", "one_wvs_only", "Semantic augmentation helps over fine-tuning on the WVS seeds only "
     "(ablation, CultureLLM-One)", "increase"),
    ("culturellm", "prompt_only", "A fine-tuned culture model beats prompting the same base model with the culture",
     "increase"),
    ("one_culturellm", "culturellm", "CultureLLM-One performs like the per-culture models", "equivalent"),
)
SPLITS = ("paraphrase", "question")


def claims(scores: pd.DataFrame, metric: str = "exact", level: float = 0.95, margin: float = 0.10,
           seed: int = 0, min_clusters: int = 8) -> list[Claim]:
    """Three comparisons x two held-out splits, each a paired cluster bootstrap over (culture,
    question) with the level widened for the six comparisons (Bonferroni). ``margin``: the band of
    "no difference" for CultureLLM-One vs per-culture, fixed before the run (in ``metric`` units).
    Conditions absent from ``scores`` give no row. With fewer than ``min_clusters`` (culture,
    question) clusters a bootstrap interval means nothing: the interval is then unbounded and the
    verdict "not resolved"."""
    if metric not in evaluate.METRICS:
        raise SurveyError(f"metric={metric!r}; allowed: {', '.join(evaluate.METRICS)}")
    have = set(scores["condition"])
    comps = [c for c in COMPARISONS if c[0] in have and c[1] in have]
    k = len(comps) * len(SPLITS)
    per = stats.adjust_level(level, max(k, 1))
    unit = {"exact": "points of exact match", "distance": "points of scale distance (lower is better)",
            "loglik": "nats"}[metric]
    scale = 100.0 if metric in ("exact", "distance") else 1.0
    out = []
    for treated, baseline, text, direction in comps:
        for split in SPLITS:
            part = scores[scores["split"] == split]
            both = part[part["condition"].isin([treated, baseline])]
            if both.empty:
                continue
            common = set(both[both["condition"] == treated]["unit"]) & set(both[both["condition"] == baseline]["unit"])
            iv = evaluate.paired_difference(part, treated, baseline, metric, level=per, seed=seed, units=sorted(common))
            note = ""
            if iv.n < min_clusters:
                iv = stats.Interval(iv.estimate, -np.inf, np.inf, iv.level, iv.method, iv.n)
                note = f"only {iv.n} clusters (< {min_clusters}): interval left unbounded"
            out.append(Claim(
                claim=f"{text} — held-out {'paraphrases' if split == 'paraphrase' else 'questions'}",
                estimate=scale * iv.estimate, low=scale * iv.low, high=scale * iv.high,
                comparison=f"{treated} − {baseline}, {metric}, paired bootstrap over (culture, question) "
                           f"clusters, {per:.1%} level (Bonferroni over {k})",
                paper="qualitative", paper_source="Section 4 (ablation; Figure 1)" if direction != "equivalent"
                else "Section 4", unit=unit, direction=direction, margin=scale * margin if direction == "equivalent" else 0.0,
                level=per, n=iv.n, resolvable=scale * iv.half_width if np.isfinite(iv.half_width) else None,
                note=note))
    return out


# ---------------------------------------------------------------------------------------------
# Downstream tasks of the paper (the `full` profile: public hub datasets)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DownstreamTask:
    culture: str
    name: str
    hub_id: str
    config: str | None
    split: str
    text_column: str
    label_column: str
    positive: str  # the label value that means "offensive"


#: Paper datasets with a public copy on the Hugging Face hub that ``full`` evaluates
#: (OffensEval 2020 for Arabic, Turkish and Greek; OLID and HatEval 2019 for English).
DOWNSTREAM: tuple[DownstreamTask, ...] = (
    DownstreamTask("Arabic", "OffensEval 2020 (ar)", "strombergnlp/offenseval_2020", "ar", "test", "text", "subtask_a", "OFF"),
    DownstreamTask("Turkish", "OffensEval 2020 (tr)", "strombergnlp/offenseval_2020", "tr", "test", "text", "subtask_a", "OFF"),
    DownstreamTask("Greek (extra)", "OffensEval 2020 (gr)", "strombergnlp/offenseval_2020", "gr", "test", "text", "subtask_a", "OFF"),
    DownstreamTask("English", "OLID (OffensEval 2019)", "cardiffnlp/tweet_eval", "offensive", "test", "text", "label", "1"),
    DownstreamTask("English", "HatEval 2019", "cardiffnlp/tweet_eval", "hate", "test", "text", "label", "1"),
)

OFFENSIVE_PROMPT = ("If the following sentence is offensive, just say OFF, otherwise NOT_OFF.\n"
                    "Sentence: {text}")


def downstream_scores(lm, texts: Sequence[str], culture: str | None, batch_size: int = 8) -> np.ndarray:
    """Zero-shot offensive-language decisions (the paper's prompt): 1 where the model gives the
    answer "OFF" a higher log-likelihood than "NOT_OFF"."""
    system = None if culture is None else survey.system_prompt(culture)
    prompts = [([{"role": "system", "content": system}] if system else []) +
               [{"role": "user", "content": OFFENSIVE_PROMPT.format(text=t)}] for t in texts]
    off = lm.score(prompts, ["OFF"] * len(prompts), batch_size=batch_size)
    not_off = lm.score(prompts, ["NOT_OFF"] * len(prompts), batch_size=batch_size)
    return (np.asarray(off) > np.asarray(not_off)).astype(int)


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(list(y_true), list(y_pred), average="macro", zero_division=0))


# ---------------------------------------------------------------------------------------------
# The whole pipeline, shared by the notebooks (every expensive step is cached)
# ---------------------------------------------------------------------------------------------

def pick_questions(survey_: Survey, n: int) -> list[int]:
    """``n`` question ids spread evenly over the 50 (every topic represented when n >= 7)."""
    ids = survey_.q_ids
    if not 1 <= n <= len(ids):
        raise SurveyError(f"n_questions must lie in 1..{len(ids)}, got {n}")
    return [ids[int(i)] for i in np.linspace(0, len(ids) - 1, n).round().astype(int)]


@dataclass
class Calibration:
    pairs: pd.DataFrame  # kind, q_id, a, b, similarity
    threshold: float
    rule: str


def calibrate(encoder, questions: Sequence[survey.Question]) -> Calibration:
    """Similarities of the calibration pairs (:func:`augment.calibration_pairs`) and the threshold
    that best separates hand-written paraphrases from sibling questions (Youden's J)."""
    pairs = augment.calibration_pairs(list(questions))
    pairs["similarity"] = augment.similarity(encoder, list(pairs["a"]), list(pairs["b"]))
    t = augment.choose_threshold(pairs[pairs["kind"] == "paraphrase"]["similarity"],
                                 pairs[pairs["kind"] == "sibling"]["similarity"])
    return Calibration(pairs, t, "Youden's J: hand-written paraphrases vs sibling questions")


def build_augmentation(paraphraser, encoder, wordnet, questions: Sequence[survey.Question], threshold: float,
                       config: augment.AugmentConfig) -> augment.Augmented:
    """Both augmentation steps for ``questions`` (paraphrases cached in the model's output cache)."""
    paraphrases = augment.sample_paraphrases(paraphraser, questions, config)
    return augment.augment(questions, paraphrases, encoder, wordnet, threshold, config)


@dataclass
class ExperimentConfig:
    """What the fine-tuning notebook trains and evaluates (fixed before the run)."""

    cultures: tuple[str, ...] = ("English", "Chinese", "Arabic")
    n_folds: int = 5
    fold: int = 0
    held_out_per_question: int = 1
    max_paraphrase_items: int = 40  # per culture: held-out paraphrases scored (a sample, seeded)
    variants_per_test_question: int = -1  # held-out questions: kept variants scored besides the seed (-1: all)
    label_rule: str = "majority"
    lora: LoraSettings = LoraSettings()
    one_steps_per_culture: bool = False  # True: CultureLLM-One gets max_steps x cultures (as many examples per
    # culture as a per-culture model); False: the same steps as one per-culture model (same compute)
    seed: int = 0


@dataclass
class Experiment:
    fold: evaluate.Fold
    adapters: dict
    scores: pd.DataFrame
    items: pd.DataFrame
    skipped: list
    rows: dict


def run_experiment(base, survey_: Survey, augmented: augment.Augmented, config: ExperimentConfig,
                   logger=None, batch_size: int = 8) -> Experiment:
    """Train every adapter of the design and score every condition on the held-out items.

    Conditions: ``untuned`` (no system prompt), ``prompt_only`` (the paper's system prompt, base
    weights), ``culturellm`` (one adapter per culture, WVS + steps 1-2), and CultureLLM-One on
    the three data conditions of the paper's ablation (``one_wvs_only``, ``one_step1_only``,
    ``one_culturellm``). Same seed, settings and steps for every per-culture model.
    """
    import dataclasses

    units = list(config.cultures)
    q_ids = sorted(augmented.candidates["q_id"].unique().tolist()) or survey_.q_ids
    folds = evaluate.question_folds(q_ids, config.n_folds, seed=config.seed)
    if not 0 <= config.fold < len(folds):
        raise SurveyError(f"fold must lie in 0..{len(folds) - 1}, got {config.fold}")
    fold = folds[config.fold]
    samples = augmented.samples((1, 2))
    train_samples, heldout = evaluate.split_variants(samples[samples["q_id"].isin(fold.train)],
                                                     config.held_out_per_question, seed=config.seed)
    test_samples = samples[samples["q_id"].isin(fold.test)]
    if config.variants_per_test_question >= 0:
        test_samples = evaluate.sample_per_group(test_samples, "q_id", config.variants_per_test_question, config.seed)
    table = labels(survey_, units, config.label_rule, on_missing="skip")
    items, skipped = test_items(units, fold, heldout, test_samples, survey_)
    para = items[items["split"] == "paraphrase"]
    if config.max_paraphrase_items and len(para):
        para = evaluate.sample_per_group(para, "unit", config.max_paraphrase_items, config.seed)
    items = pd.concat([para, items[items["split"] == "question"]], ignore_index=True)
    adapters, rows_by = {}, {}
    for unit in units:
        rows, sk = training_rows([unit], fold.train, train_samples, table, survey_, steps=(1, 2))
        skipped += sk
        rows_by[f"culturellm:{unit}"] = rows
        adapters[f"culturellm:{unit}"] = finetune.train_adapter(base, rows, config.lora, name=f"CultureLLM-{unit}",
                                                                logger=logger)
    one_settings = config.lora
    if config.one_steps_per_culture and config.lora.max_steps > 0:
        one_settings = dataclasses.replace(config.lora, max_steps=config.lora.max_steps * len(units))
    for cond, steps in DATA_CONDITIONS.items():
        rows, _ = training_rows(units, fold.train, train_samples, table, survey_, steps=steps)
        rows_by[f"one_{cond}"] = rows
        adapters[f"one_{cond}"] = finetune.train_adapter(base, rows, one_settings, name=f"CultureLLM-One ({cond})",
                                                         logger=logger)
    majority = table.as_dict()
    parts = [evaluate.evaluate(base, items, survey_, majority, None, "untuned", batch_size),
             evaluate.evaluate(base, items, survey_, majority, "culture", "prompt_only", batch_size)]
    for unit in units:
        with finetune.tuned(base, adapters[f"culturellm:{unit}"]) as m:
            parts.append(evaluate.evaluate(m, items[items["unit"] == unit], survey_, majority, "culture",
                                           "culturellm", batch_size))
    for cond in DATA_CONDITIONS:
        with finetune.tuned(base, adapters[f"one_{cond}"]) as m:
            parts.append(evaluate.evaluate(m, items, survey_, majority, "culture", f"one_{cond}", batch_size))
    return Experiment(fold, adapters, pd.concat(parts, ignore_index=True), items,
                      sorted(set(skipped)), rows_by)


CONDITION_NAMES = {"untuned": "untuned (no culture named)", "prompt_only": "prompt only (culture in system prompt)",
                   "culturellm": "CultureLLM (per culture)", "one_wvs_only": "CultureLLM-One, WVS only",
                   "one_step1_only": "CultureLLM-One, WVS + step 1", "one_culturellm": "CultureLLM-One, WVS + steps 1-2"}
