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
           seed: int = 0) -> list[Claim]:
    """Three comparisons x two held-out splits, each a paired cluster bootstrap over (culture,
    question) with the level widened for the six comparisons (Bonferroni). ``margin``: the band of
    "no difference" for CultureLLM-One vs per-culture, fixed before the run (in ``metric`` units).
    Conditions absent from ``scores`` give no row."""
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
            out.append(Claim(
                claim=f"{text} — held-out {'paraphrases' if split == 'paraphrase' else 'questions'}",
                estimate=scale * iv.estimate, low=scale * iv.low, high=scale * iv.high,
                comparison=f"{treated} − {baseline}, {metric}, paired bootstrap over (culture, question) "
                           f"clusters, {per:.1%} level (Bonferroni over {k})",
                paper="qualitative", paper_source="Section 4 (ablation; Figure 1)" if direction != "equivalent"
                else "Section 4", unit=unit, direction=direction, margin=scale * margin if direction == "equivalent" else 0.0,
                level=per, n=iv.n, resolvable=scale * iv.half_width))
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
