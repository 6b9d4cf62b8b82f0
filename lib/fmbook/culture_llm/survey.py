"""The seed data of CultureLLM (arXiv 2402.10946, Section 3.1): 50 World Values Survey wave-7
questions with each country's answers, the labels derived from them, and the chat format of a
training example.

>>> survey = load_survey()
>>> survey.distribution("Chinese", 27)                 # shares of each answer code
>>> table = labels(survey, ["Chinese", "German"], rule="majority", on_missing="skip")
>>> table.skipped                                       # (unit, q_id) pairs without answers

A *unit* is a culture of the paper (``"Arabic"`` pools Iraq and Jordan) or a single country. A
question a country was not asked has no answers: asking for its distribution raises
:class:`MissingAnswers`; label tables either raise or skip and count it (``on_missing``), never
fill in a zero.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

#: The nine cultures of the paper (Section 3.1) and the WVS countries that represent them.
CULTURES: dict[str, tuple[str, ...]] = {
    "Arabic": ("Iraq", "Jordan"), "Bengali": ("Bangladesh",), "Chinese": ("China",),
    "English": ("United States",), "German": ("Germany",), "Korean": ("South Korea",),
    "Portuguese": ("Brazil",), "Spanish": ("Argentina", "Mexico"), "Turkish": ("Turkey",),
}
LABEL_RULES = ("majority", "rounded_mean", "official")
ON_MISSING = ("raise", "skip")


class SurveyError(ValueError):
    """An unknown culture/country/question or rule (the message lists the allowed values)."""


class MissingAnswers(SurveyError):
    """A country (or every country of a culture) has no valid answers for a question."""


def data_dir() -> Path:
    """The book's copy of the survey data (``data/wvs`` in a checkout, ``fmbook/_data/wvs`` in a wheel)."""
    from fmbook.core.paths import repo_root

    root = repo_root()
    candidates = [root / "data" / "wvs"] if root is not None else []
    candidates.append(Path(__file__).resolve().parent.parent / "_data" / "wvs")
    for folder in candidates:
        if (folder / "wvs_culture_seed.json").is_file():
            return folder
    raise SurveyError("cannot find the survey data (data/wvs/wvs_culture_seed.json); set FMBOOK_ROOT "
                      "to the book's repository root")


@dataclass(frozen=True)
class Question:
    q_id: int
    text: str
    topic: str
    options: dict[int, str]

    @property
    def codes(self) -> list[int]:
        return sorted(self.options)

    @property
    def low(self) -> int:
        return min(self.options)

    @property
    def high(self) -> int:
        return max(self.options)

    @property
    def span(self) -> int:
        return self.high - self.low


@dataclass
class Survey:
    """Answer counts per country and question (valid codes only) and the missing-code counts."""

    questions: dict[int, Question]
    counts: dict[str, dict[int, dict[int, int]]]
    missing: dict[str, dict[int, dict[int, int]]] = field(default_factory=dict)
    respondents: dict[str, int] = field(default_factory=dict)
    dropped_row: dict[str, dict[int, int]] = field(default_factory=dict)  # see wvs_missing_codes.json
    source: str = ""

    # -- names ---------------------------------------------------------------------------------
    @property
    def countries(self) -> list[str]:
        return sorted(self.counts)

    @property
    def q_ids(self) -> list[int]:
        return sorted(self.questions)

    def question(self, q_id: int) -> Question:
        try:
            return self.questions[int(q_id)]
        except (KeyError, ValueError, TypeError):
            raise SurveyError(f"unknown question {q_id!r}; the survey has Q{self.q_ids[0]}..Q{self.q_ids[-1]} "
                              f"({len(self.q_ids)} questions: {', '.join(map(str, self.q_ids))})") from None

    def countries_of(self, unit: str) -> tuple[str, ...]:
        """The countries of a culture, or ``(unit,)`` for a country; unknown names are refused."""
        if unit in CULTURES:
            return CULTURES[unit]
        if unit in self.counts:
            return (unit,)
        raise SurveyError(f"unknown culture or country {unit!r}; cultures: {', '.join(CULTURES)}; "
                          f"countries: {', '.join(self.countries)}")

    # -- answers -------------------------------------------------------------------------------
    def pooled_counts(self, unit: str, q_id: int) -> np.ndarray:
        """Counts per code (in :attr:`Question.codes` order), summed over the unit's countries."""
        q = self.question(q_id)
        total = np.zeros(len(q.codes), dtype=np.int64)
        for country in self.countries_of(unit):
            row = self.counts[country].get(q.q_id, {})
            total += np.array([row.get(c, 0) for c in q.codes], dtype=np.int64)
        return total

    def has_answers(self, unit: str, q_id: int) -> bool:
        return int(self.pooled_counts(unit, q_id).sum()) > 0

    def distribution(self, unit: str, q_id: int) -> np.ndarray:
        """Share of each answer code among valid answers; :class:`MissingAnswers` when there are none."""
        counts = self.pooled_counts(unit, q_id)
        if counts.sum() == 0:
            raise MissingAnswers(f"{unit} has no answers for Q{q_id} (not asked there: WVS code -4); "
                                 f"use on_missing='skip' to leave it out and count it")
        return counts / counts.sum()

    def missing_pairs(self, units: Iterable[str]) -> list[tuple[str, int]]:
        return [(u, q) for u in units for q in self.q_ids if not self.has_answers(u, q)]


def load_survey(folder: Path | str | None = None) -> Survey:
    """Read ``wvs_culture_seed.json`` (and ``wvs_missing_codes.json`` when present)."""
    folder = Path(folder) if folder is not None else data_dir()
    raw = json.loads((folder / "wvs_culture_seed.json").read_text(encoding="utf-8"))
    questions = {int(q["q_id"]): Question(int(q["q_id"]), q["text"].strip(), q["topic"],
                                          {int(k): v for k, v in q["options"].items()})
                 for q in raw["questions"]}
    counts = {country: {int(q): {int(code): int(n) for code, n in a["counts"].items()}
                        for q, a in entry["answers"].items()}
              for country, entry in raw["countries"].items()}
    respondents = {country: int(entry["respondents"]) for country, entry in raw["countries"].items()}
    missing: dict[str, dict[int, dict[int, int]]] = {}
    dropped: dict[str, dict[int, int]] = {}
    extra = folder / "wvs_missing_codes.json"
    if extra.is_file():
        m = json.loads(extra.read_text(encoding="utf-8"))
        missing = {c: {int(q): {int(k): int(v) for k, v in codes.items()} for q, codes in e["missing"].items()}
                   for c, e in m["countries"].items()}
        dropped = {c: {int(q): int(v) for q, v in (e.get("official_dropped_row") or {}).items()}
                   for c, e in m["countries"].items()}
    return Survey(questions, counts, missing, respondents, dropped, raw.get("source", ""))


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------

def round_half_up(x: float) -> int:
    """Round to the nearest integer, halves upwards (Python's ``round`` rounds halves to even)."""
    return int(math.floor(x + 0.5))


def label_from_counts(counts: dict[int, int], rule: str = "majority",
                      missing: dict[int, int] | None = None, dropped: int = 0) -> int:
    """One label from answer counts ``{code: n}`` of valid answers.

    * ``majority``: the most frequent code (ties: the lower code);
    * ``rounded_mean``: the mean code over valid answers, rounded half up;
    * ``official``: what the official code does (``data_process.py``): the mean over *all*
      respondents with the negative missing codes (``missing``, ``{code: n}``) summed in, cast to
      ``int`` (truncation towards zero), and made positive if negative. Shown as what not to do.
      ``dropped``: the code of a respondent the official loop leaves out of the sum (its 1001st
      row) while still counting them in the denominator.
    """
    if rule not in LABEL_RULES:
        raise SurveyError(f"rule={rule!r} is not a label rule; allowed: {', '.join(LABEL_RULES)}")
    if any(code < 0 for code in counts):
        raise SurveyError(f"valid answer codes are >= 0; got negative codes {sorted(c for c in counts if c < 0)} "
                          "(pass missing codes through 'missing')")
    valid = {c: n for c, n in counts.items() if n > 0}
    missing = {c: n for c, n in (missing or {}).items() if n > 0}
    if rule == "official":
        total = sum(valid.values()) + sum(missing.values())
        if total == 0:
            raise MissingAnswers("no respondents at all")
        mean = (sum(c * n for c, n in valid.items()) + sum(c * n for c, n in missing.items()) - dropped) / total
        label = int(mean)
        return -label if label < 0 else label
    if not valid:
        raise MissingAnswers("no valid answers")
    if rule == "majority":
        best = max(valid.values())
        return min(c for c, n in valid.items() if n == best)
    n = sum(valid.values())
    return round_half_up(sum(c * k for c, k in valid.items()) / n)


@dataclass
class LabelTable:
    """Labels per (unit, question) and the pairs left out for lack of answers."""

    frame: pd.DataFrame  # unit, q_id, label, mean, n
    rule: str
    skipped: list[tuple[str, int]]

    def label(self, unit: str, q_id: int) -> int:
        row = self.frame[(self.frame["unit"] == unit) & (self.frame["q_id"] == int(q_id))]
        if row.empty:
            if (unit, int(q_id)) in self.skipped:
                raise MissingAnswers(f"{unit} has no answers for Q{q_id} (skipped)")
            raise SurveyError(f"no label for ({unit!r}, Q{q_id}) in this table")
        return int(row["label"].iloc[0])

    def as_dict(self) -> dict[tuple[str, int], int]:
        return {(u, int(q)): int(v) for u, q, v in zip(self.frame["unit"], self.frame["q_id"], self.frame["label"])}


def labels(survey: Survey, units: Sequence[str], rule: str = "majority", on_missing: str = "raise") -> LabelTable:
    """Label every question for every unit by ``rule`` (see :func:`label_from_counts`).

    A (unit, question) without valid answers raises :class:`MissingAnswers` (``on_missing='raise'``)
    or is left out and listed in :attr:`LabelTable.skipped` (``'skip'``). The ``official`` rule
    does not skip: like the official code, it turns "not asked" (-4) into the label 4.
    """
    if on_missing not in ON_MISSING:
        raise SurveyError(f"on_missing={on_missing!r}; allowed: {', '.join(ON_MISSING)}")
    if rule not in LABEL_RULES:
        raise SurveyError(f"rule={rule!r} is not a label rule; allowed: {', '.join(LABEL_RULES)}")
    rows, skipped = [], []
    for unit in units:
        countries = survey.countries_of(unit)
        for q_id in survey.q_ids:
            q = survey.question(q_id)
            pooled = dict(zip(q.codes, survey.pooled_counts(unit, q_id).tolist()))
            n = sum(pooled.values())
            if rule == "official":
                if not survey.missing and n == 0:
                    raise SurveyError("the official rule needs wvs_missing_codes.json (missing-code counts)")
                miss: dict[int, int] = {}
                drop = 0
                for country in countries:
                    for code, k in survey.missing.get(country, {}).get(q_id, {}).items():
                        miss[code] = miss.get(code, 0) + k
                    drop += survey.dropped_row.get(country, {}).get(q_id, 0)
                label = label_from_counts(pooled, "official", miss, drop)
            elif n == 0:
                if on_missing == "raise":
                    raise MissingAnswers(f"{unit} has no answers for Q{q_id} (not asked there); "
                                         "use on_missing='skip' to leave such pairs out and count them")
                skipped.append((unit, q_id))
                continue
            else:
                label = label_from_counts(pooled, rule)
            mean = sum(c * k for c, k in pooled.items()) / n if n else float("nan")
            rows.append({"unit": unit, "q_id": q_id, "label": label, "mean": mean, "n": n})
    return LabelTable(pd.DataFrame(rows, columns=["unit", "q_id", "label", "mean", "n"]), rule, skipped)


def compare_rules(survey: Survey, units: Sequence[str], reference: str = "majority") -> pd.DataFrame:
    """For each unit: how many labels each rule changes relative to ``reference`` (answered questions only),
    and how many labels the official rule invents for questions the unit was never asked."""
    ref = labels(survey, units, reference, on_missing="skip")
    rows = []
    for unit in units:
        r = {k: v for k, v in ref.as_dict().items() if k[0] == unit}
        row = {"unit": unit, "answered": len(r)}
        for rule in LABEL_RULES:
            if rule == reference:
                continue
            other = labels(survey, [unit], rule, on_missing="skip").as_dict()
            row[f"{rule} differs"] = sum(other[k] != v for k, v in r.items())
            if rule == "official":
                invented = [k for k in other if k not in r]
                row["official: labels for unasked questions"] = len(invented)
                row["official: label outside the scale"] = sum(
                    not survey.question(k[1]).low <= other[k] <= survey.question(k[1]).high for k in other)
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Where cultures differ
# ---------------------------------------------------------------------------------------------

def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence in bits (0: same distribution, 1: disjoint supports)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    if p.shape != q.shape:
        raise SurveyError(f"distributions differ in length: {p.shape} vs {q.shape}")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a, b):
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def wasserstein_ordinal(p: Sequence[float], q: Sequence[float]) -> float:
    """Earth mover's distance between two distributions over ordered codes, divided by the number of
    steps (0..1): it counts how far answers move along the scale, which JS divergence ignores."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    p, q = p / p.sum(), q / q.sum()
    steps = max(len(p) - 1, 1)
    return float(np.abs(np.cumsum(p) - np.cumsum(q))[:-1].sum() / steps)


def divergence_by_question(survey: Survey, units: Sequence[str]) -> pd.DataFrame:
    """Per question: mean pairwise JS divergence and ordinal distance between the units that answered it."""
    rows = []
    for q_id in survey.q_ids:
        have = [u for u in units if survey.has_answers(u, q_id)]
        pairs = [(a, b) for i, a in enumerate(have) for b in have[i + 1:]]
        if not pairs:
            continue
        dists = {u: survey.distribution(u, q_id) for u in have}
        js = [js_divergence(dists[a], dists[b]) for a, b in pairs]
        w = [wasserstein_ordinal(dists[a], dists[b]) for a, b in pairs]
        q = survey.question(q_id)
        rows.append({"q_id": q_id, "topic": q.topic, "question": q.text, "units": len(have),
                     "mean JS (bits)": float(np.mean(js)), "max JS (bits)": float(np.max(js)),
                     "mean ordinal distance": float(np.mean(w))})
    return pd.DataFrame(rows).sort_values("mean JS (bits)", ascending=False, ignore_index=True)


def divergence_matrix(survey: Survey, units: Sequence[str]) -> pd.DataFrame:
    """Mean JS divergence between each pair of units over the questions both answered."""
    out = pd.DataFrame(0.0, index=list(units), columns=list(units))
    for i, a in enumerate(units):
        for b in units[i + 1:]:
            shared = [q for q in survey.q_ids if survey.has_answers(a, q) and survey.has_answers(b, q)]
            v = float(np.mean([js_divergence(survey.distribution(a, q), survey.distribution(b, q)) for q in shared]))
            out.loc[a, b] = out.loc[b, a] = v
    return out


# ---------------------------------------------------------------------------------------------
# The training format (Section 3.3; the official data_process.py)
# ---------------------------------------------------------------------------------------------

def options_text(question: Question) -> str:
    """``"1. Strongly agree 2. Agree ..."``; scale points labelled only by their number are left out
    (``"1. Completely disagree 10. Completely agree"``), as in the official WVQ.jsonl."""
    return " ".join(f"{c}. {question.options[c]}" for c in question.codes if question.options[c] != str(c))


def system_prompt(culture: str) -> str:
    """The paper's system message (the official code's grammar fixed: "an China chatbot that know")."""
    return f"You are a {culture} chatbot that knows {culture} very well."


def user_prompt(text: str, question: Question) -> str:
    """The paper's user message around a question text (a seed or an augmented variant)."""
    text = text.strip()
    head = f"Give me the answer from {question.low} to {question.high}:"
    body = text if "?" in text else f"Do you agree with {text.rstrip('.')}?"
    return f"{head} {body} {options_text(question)}. You can only choose one option."


def chat_example(culture: str | None, text: str, question: Question, answer: int | None = None) -> list[dict]:
    """Chat messages of one example: system (omitted when ``culture`` is None), user, and the
    assistant's answer digit(s) when ``answer`` is given."""
    if answer is not None and answer not in question.options:
        raise SurveyError(f"answer {answer!r} is not a code of Q{question.q_id}; allowed: {question.codes}")
    messages = [] if culture is None else [{"role": "system", "content": system_prompt(culture)}]
    messages.append({"role": "user", "content": user_prompt(text, question)})
    if answer is not None:
        messages.append({"role": "assistant", "content": str(answer)})
    return messages
