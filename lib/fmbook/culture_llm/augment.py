"""Semantic data augmentation (CultureLLM, arXiv 2402.10946, Section 3.2; the official ``main.py``).

Step 1: a language model writes ``k`` paraphrases of each seed question ("different sentence
structure, same meaning"; GPT-4 at temperature 0.7 in the paper, the offline instruction model
here); a paraphrase is kept when its cosine similarity to the seed is above a threshold (0.80 with
mean-pooled bert-base-uncased in the paper; recalibrated here for the MiniLM encoder by
:func:`choose_threshold`). Step 2: content words are replaced by synonyms (WordNet here, the LLM in
the paper) and a variant is kept when it stays above the threshold; the ``m`` most similar variants
per seed are the augmented samples (``--n 5 --m 10`` in the official command: 50 x 10 = 500).

Differences from the official code, on purpose: words are replaced as whole words (``str.replace``
there also rewrites "men" inside "women"); the step-2 filter compares with the *seed* (the official
code compares with the step-1 sentence and ranks by the seed); content words are found with
WordNet itself, since NLTK's part-of-speech tagger model does not install offline (see
:func:`content_words`).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from fmbook.culture_llm.survey import Question

PARAPHRASE_PROMPT = ("Rewrite the following sentence with a different sentence structure but exactly the "
                     "same meaning. Reply with the rewritten sentence only.\nSentence: {text}")

STOPWORDS = frozenset("""a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing don down during each few for from further had has
have having he her here hers herself him himself his how i if in into is it its itself just me more most my
myself no nor not now of off on once only or other our ours ourselves out over own same she should so some such
than that the their theirs them themselves then there these they this those through to too under until up very
was we were what when where which while who whom why will with would you your yours yourself yourselves one
do does did following things thing occur way much many also even ever always less people""".split())


class AugmentError(ValueError):
    """A bad augmentation parameter (the message names it and the allowed values)."""


@dataclass(frozen=True)
class AugmentConfig:
    """Settings of both augmentation steps; defaults are the paper's (Section 3.2, ``main.py``)."""

    n_paraphrases: int = 5  # step 1: paraphrases asked for per seed (paper: 5)
    temperature: float = 0.7  # step 1 sampling temperature (paper: GPT-4 at 0.7)
    max_new_tokens: int = 48  # step 1: length cap of one paraphrase
    synonyms_per_word: int = 5  # step 2: synonyms per content word (paper: 5 from the LLM)
    tries_per_sentence: int = 10  # step 2: variants drawn per kept step-1 sentence (official loop: 10)
    keep_per_seed: int = 10  # m: augmented samples kept per seed (paper: 10)
    paper_threshold: float = 0.80  # the paper's threshold (bert-base-uncased, mean pooling)
    seed: int = 0

    def __post_init__(self):
        for name in ("n_paraphrases", "max_new_tokens", "synonyms_per_word", "tries_per_sentence", "keep_per_seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise AugmentError(f"{name} must be a positive int, got {v!r}")
        if not 0 < self.temperature <= 2:
            raise AugmentError(f"temperature must lie in (0, 2], got {self.temperature!r}")


# ---------------------------------------------------------------------------------------------
# Step 1: paraphrases sampled from the instruction model (cached)
# ---------------------------------------------------------------------------------------------

def _clean_paraphrase(text: str) -> str:
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^(\d+[.)]\s*|[-*]\s*|(rewritten sentence|sentence|answer)\s*:\s*)", "", line, flags=re.I)
    return line.strip().strip('"“”').strip()


def sample_paraphrases(model, questions: Sequence[Question], config: AugmentConfig = AugmentConfig(),
                       texts: dict[int, str] | None = None) -> pd.DataFrame:
    """``config.n_paraphrases`` sampled paraphrases per question (one seeded ``generate`` call per
    question, ``num_return_sequences=k``), read from / written to the model's output cache.

    ``model`` is a :class:`fmbook.core.lm.CausalLM`. Returns rows ``q_id, seed_text, candidate``
    (empty or unchanged candidates are kept and marked so the survivors can be counted).
    """
    import torch

    from fmbook.core.lm import OutputCache
    from fmbook.core.progress import progress

    rows = []
    settings = {"k": config.n_paraphrases, "temperature": config.temperature,
                "max_new_tokens": config.max_new_tokens, "seed": config.seed, "v": 1}
    for q in progress(questions, total=len(questions), desc="paraphrases (questions)", every_s=15.0):
        seed_text = (texts or {}).get(q.q_id, q.text)
        rendered = model.render([{"role": "user", "content": PARAPHRASE_PROMPT.format(text=seed_text)}])
        key = OutputCache.key(model.cache_id, "culture_llm.paraphrase", rendered, settings)
        found = model.cache.get_many([key]) if model.cache else {}
        if key in found:
            outs = found[key]
        else:
            tok = model.tokenizer
            enc = tok(rendered, return_tensors="pt", add_special_tokens=False).to(model.device)
            torch.manual_seed(config.seed * 1_000_003 + q.q_id)
            with torch.inference_mode():
                gen = model.model.generate(**enc, do_sample=True, temperature=config.temperature, top_p=1.0,
                                           top_k=0, num_return_sequences=config.n_paraphrases,
                                           max_new_tokens=config.max_new_tokens, eos_token_id=model._eos,
                                           pad_token_id=tok.pad_token_id, stop_strings=["\n"], tokenizer=tok)
            outs = [_clean_paraphrase(t) for t in
                    tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
            if model.cache:
                model.cache.put_many({key: outs})
        for i, cand in enumerate(outs):
            rows.append({"q_id": q.q_id, "seed_text": seed_text, "sample": i, "candidate": cand})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The similarity filter and its threshold
# ---------------------------------------------------------------------------------------------

def similarity(encoder, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """Cosine similarity of each pair ``(a[i], b[i])`` under ``encoder`` (a loaded sentence encoder)."""
    from fmbook.core.text_encoder import embed

    if len(a) != len(b):
        raise AugmentError(f"similarity: {len(a)} texts vs {len(b)} texts")
    if not len(a):
        return np.zeros(0)
    va = embed(list(a), encoder).vectors
    vb = embed(list(b), encoder).vectors
    return np.sum(va * vb, axis=1)


def choose_threshold(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """The similarity threshold that best separates kept pairs (``positives``: same meaning) from
    ``negatives`` (meaning changed): the midpoint maximising Youden's J = TPR - FPR (a pair is
    kept when its similarity is *strictly above* the threshold); ties go to the higher threshold
    (stricter filter)."""
    pos, neg = np.asarray(positives, float), np.asarray(negatives, float)
    if pos.size == 0 or neg.size == 0:
        raise AugmentError("choose_threshold needs at least one positive and one negative similarity")
    values = np.unique(np.concatenate([pos, neg]))
    cands = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    best, best_j = cands[0], -np.inf
    for t in cands:
        j = np.mean(pos > t) - np.mean(neg > t)
        if j >= best_j - 1e-12:
            if j > best_j + 1e-12 or t > best:
                best, best_j = t, j
    return float(best)


def negate(text: str) -> str:
    """A meaning-reversing edit of a survey statement (used to calibrate the filter)."""
    t = text.strip().rstrip(".?")
    return f"It is not true that {t[0].lower() + t[1:]}."


def calibration_pairs(questions: Sequence[Question], reference: dict[int, list[str]] | None = None,
                      seed: int = 0) -> pd.DataFrame:
    """Pairs of texts with a known relation, for choosing the threshold.

    * ``paraphrase``: hand-written paraphrases (``reference``: q_id -> texts; default
      :data:`REFERENCE_PARAPHRASES`) — meaning kept;
    * ``negation``: the seed and its negation — meaning reversed;
    * ``sibling``: every pair of items of one question block ("How frequently ... : Robberies?"
      vs "... : Drug sale in streets?") — a different question with its own answers;
    * ``unrelated``: the seed and a seed of another topic.
    """
    reference = REFERENCE_PARAPHRASES if reference is None else reference
    by_id = {q.q_id: q for q in questions}
    rng = random.Random(seed)
    rows = []
    for q_id, texts in reference.items():
        if q_id in by_id:
            rows += [{"kind": "paraphrase", "q_id": q_id, "a": by_id[q_id].text, "b": t} for t in texts]
    for q in questions:
        rows.append({"kind": "negation", "q_id": q.q_id, "a": q.text, "b": negate(q.text)})
        stem = q.text.split(":")[0] if ":" in q.text else None
        sibs = [o for o in questions if o.q_id > q.q_id and stem and o.text.split(":")[0] == stem]
        rows += [{"kind": "sibling", "q_id": q.q_id, "a": q.text, "b": o.text} for o in sibs]
        others = [o for o in questions if o.topic != q.topic]
        if others:
            rows.append({"kind": "unrelated", "q_id": q.q_id, "a": q.text, "b": rng.choice(others).text})
    return pd.DataFrame(rows)


#: Paraphrases written by hand for the book (meaning kept; used to calibrate and to test the filter).
REFERENCE_PARAPHRASES: dict[int, list[str]] = {
    27: ["A key goal in my life has been to make my parents proud of me.",
         "Making my parents proud has been one of my main aims in life."],
    28: ["Children suffer when their mother has a paid job.",
         "If a mother works for money, her children are the ones who suffer."],
    29: ["Men generally make better political leaders than women.",
         "In general, men are better at political leadership than women are."],
    30: ["Going to university matters more for a boy than for a girl."],
    31: ["Overall, men are better business executives than women."],
    36: ["Same-sex couples are just as good at parenting as other couples."],
    37: ["Having children is a duty people owe to society."],
    38: ["Grown-up children are obliged to look after their parents over the long term."],
    39: ["People become lazy when they do not work."],
    40: ["Working is a duty one has towards society."],
    158: ["Science and technology make our lives healthier, easier and more comfortable."],
    160: ["We rely too much on science and not enough on faith."],
    169: ["When science and religion disagree, religion is always correct."],
    170: ["My religion is the only religion that is acceptable."],
}


# ---------------------------------------------------------------------------------------------
# Step 2: synonym replacement with WordNet
# ---------------------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def load_wordnet(folder: Path | str | None = None):
    """NLTK's WordNet reader on the WordNet 3.0 database of the ``wordnet-3.0`` asset."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    from fmbook.core import assets

    folder = Path(folder) if folder is not None else assets.require("wordnet-3.0")
    import warnings

    class _WordNet30(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            return None  # this *is* WordNet 3.0: no mapping to another version (NLTK would look for one)

    root = str(Path(folder).resolve())
    if root not in nltk.data.path:
        nltk.data.path.append(root)  # NLTK only opens corpus folders on its data path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "multilingual functions are not available": not used
        return _WordNet30(root, None)


def content_words(text: str, wordnet) -> list[tuple[str, str]]:
    """``(word, pos)`` for the words of ``text`` that WordNet knows as a noun, verb, adjective or
    adverb, stopwords left out; the part of speech is that of the word's most frequent sense
    (WordNet's tagged-corpus counts), our stand-in for NLTK's tagger."""
    out = []
    for word in _WORD.findall(text):
        low = word.lower()
        if low in STOPWORDS or len(low) < 3:
            continue
        synsets = wordnet.synsets(low)
        if not synsets:
            continue
        counts: dict[str, int] = {}
        for s in synsets:
            pos = "a" if s.pos() == "s" else s.pos()
            counts[pos] = counts.get(pos, 0) + sum(lem.count() for lem in s.lemmas() if lem.name().lower() == low) + 1
        out.append((word, max(counts, key=counts.get)))
    return out


def synonyms(word: str, pos: str, wordnet, n: int = 5) -> list[str]:
    """Up to ``n`` single-word WordNet synonyms of ``word`` in part of speech ``pos``, most frequent sense first."""
    low = word.lower()
    pos_set = {"a", "s"} if pos == "a" else {pos}
    found: list[str] = []
    for s in wordnet.synsets(low):
        if s.pos() not in pos_set:
            continue
        for lem in s.lemmas():
            name = lem.name().replace("_", " ")
            if " " in name or name.lower() == low or name.lower() in (f.lower() for f in found):
                continue
            found.append(name)
            if len(found) >= n:
                return found
    return found


def replace_word(text: str, word: str, new: str) -> str:
    """Replace ``word`` as a whole word (first letter's case kept)."""
    if word[:1].isupper():
        new = new[:1].upper() + new[1:]
    return re.sub(rf"\b{re.escape(word)}\b", new, text)


def synonym_variants(text: str, wordnet, config: AugmentConfig, rng: random.Random) -> list[str]:
    """``config.tries_per_sentence`` variants of ``text``: each content word is replaced, with
    probability k/(k+2) as in the official loop, by one of its ``k`` synonyms drawn at random."""
    words = [(w, p, synonyms(w, p, wordnet, config.synonyms_per_word)) for w, p in content_words(text, wordnet)]
    words = [(w, p, s) for w, p, s in words if s]
    variants = []
    for _ in range(config.tries_per_sentence):
        new = text
        for w, _, syns in words:
            i = rng.randint(0, len(syns) + 1)
            if i < len(syns):
                new = replace_word(new, w, syns[i])
        if new != text:
            variants.append(new)
    return list(dict.fromkeys(variants))


# ---------------------------------------------------------------------------------------------
# Both steps
# ---------------------------------------------------------------------------------------------

@dataclass
class Augmented:
    """The result of augmentation: every candidate with its step, similarity and fate."""

    candidates: pd.DataFrame  # q_id, step, text, parent, similarity, kept
    threshold: float
    config: AugmentConfig

    def samples(self, steps: Sequence[int] = (1, 2)) -> pd.DataFrame:
        """Kept samples of the given steps (``q_id, step, text, similarity``)."""
        c = self.candidates
        return c[c["kept"] & c["step"].isin(list(steps))][["q_id", "step", "text", "similarity"]].reset_index(drop=True)

    def survivors(self) -> pd.DataFrame:
        c = self.candidates
        out = c.groupby("step").agg(candidates=("kept", "size"), kept=("kept", "sum")).reset_index()
        out["share kept"] = out["kept"] / out["candidates"]
        return out


def augment(questions: Sequence[Question], paraphrases: pd.DataFrame, encoder, wordnet, threshold: float,
            config: AugmentConfig = AugmentConfig()) -> Augmented:
    """Filter step-1 ``paraphrases`` (from :func:`sample_paraphrases`) and run step 2 on the survivors.

    Step 1 keeps at most ``n_paraphrases`` distinct candidates above ``threshold``. Step 2 draws
    synonym variants of every kept step-1 sentence (of the seed itself when none survived, as the
    official code does), keeps those above ``threshold`` against the seed, and retains the
    ``keep_per_seed // n_kept`` most similar per step-1 sentence.
    """
    if not -1 <= threshold <= 1:
        raise AugmentError(f"threshold must lie in [-1, 1], got {threshold!r}")
    rows = []
    by_q = {q.q_id: q for q in questions}
    p = paraphrases[paraphrases["q_id"].isin(list(by_q))]
    seeds = [by_q[q].text for q in p["q_id"]]
    sims = similarity(encoder, seeds, list(p["candidate"]))
    seen: dict[int, set] = {}
    for (q_id, cand), sim in zip(zip(p["q_id"], p["candidate"]), sims):
        seen.setdefault(q_id, set())
        valid = bool(cand) and cand.lower() != by_q[q_id].text.lower() and cand.lower() not in seen[q_id]
        kept = valid and sim > threshold
        if valid:
            seen[q_id].add(cand.lower())
        rows.append({"q_id": q_id, "step": 1, "text": cand, "parent": by_q[q_id].text, "similarity": float(sim),
                     "kept": kept, "reason": "kept" if kept else ("duplicate or empty" if not valid else "below threshold")})
    step1 = pd.DataFrame(rows)
    for q in questions:
        parents = list(step1[(step1["q_id"] == q.q_id) & step1["kept"]]["text"]) if len(step1) else []
        bases = parents or [q.text]
        per_parent = max(config.keep_per_seed // len(bases), 1)
        rng = random.Random(int(hashlib.sha256(f"{config.seed}:{q.q_id}".encode()).hexdigest()[:8], 16))
        for base in bases:
            variants = [v for v in synonym_variants(base, wordnet, config, rng) if v.lower() != q.text.lower()]
            if not variants:
                continue
            vs = similarity(encoder, [q.text] * len(variants), variants)
            order = np.argsort(-vs)
            above = [i for i in order if vs[i] > threshold][:per_parent]
            for i in order:
                rows.append({"q_id": q.q_id, "step": 2, "text": variants[i], "parent": base,
                             "similarity": float(vs[i]), "kept": i in above,
                             "reason": "kept" if i in above else ("below threshold" if vs[i] <= threshold
                                                                  else "beyond the m kept per seed")})
    frame = pd.DataFrame(rows, columns=["q_id", "step", "text", "parent", "similarity", "kept", "reason"])
    return Augmented(frame, float(threshold), config)


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams / all n-grams over ``texts`` (lower-cased words): 1 = no n-gram repeats."""
    grams = []
    for t in texts:
        w = [x.lower() for x in _WORD.findall(t)]
        grams += [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def diversity(encoder, questions: Sequence[Question], augmented: Augmented) -> pd.DataFrame:
    """Per step set (seed only; + step 1; + steps 1-2): samples, distinct-2, and the mean pairwise
    cosine distance among the texts of one seed (averaged over seeds)."""
    from fmbook.core.text_encoder import embed

    rows = []
    for name, steps in (("WVS seeds only", ()), ("+ step 1", (1,)), ("+ steps 1 and 2", (1, 2))):
        kept = augmented.samples(steps) if steps else augmented.samples(())
        texts_all, spreads = [], []
        for q in questions:
            texts = [q.text] + list(kept[kept["q_id"] == q.q_id]["text"])
            texts_all += texts
            if len(texts) > 1:
                v = embed(texts, encoder).vectors
                sim = v @ v.T
                iu = np.triu_indices(len(texts), 1)
                spreads.append(float(np.mean(1 - sim[iu])))
        rows.append({"data": name, "samples": len(texts_all), "distinct-2": distinct_n(texts_all, 2),
                     "mean within-seed cosine distance": float(np.mean(spreads)) if spreads else 0.0})
    return pd.DataFrame(rows)
