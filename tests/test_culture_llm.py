"""CultureLLM: labels on hand-made counts (missing and negative codes), unknown names and questions
without answers, the chat format, the similarity filter and its threshold, leave-questions-out folds,
option distributions and LoRA adapters on a tiny random Qwen2 (the `full` code path), claims."""


import numpy as np
import pandas as pd
import pytest
import torch

from conftest import save_tiny_qwen2

from fmbook import culture_llm as C
from fmbook.core import assets, lm
from fmbook.culture_llm import augment as A
from fmbook.culture_llm import evaluate as E
from fmbook.culture_llm import finetune as F
from fmbook.culture_llm import survey as S


@pytest.fixture(scope="module")
def sv():
    return S.load_survey()


# -- labels --------------------------------------------------------------------------------------

def test_majority_and_rounded_mean_on_hand_made_counts():
    counts = {1: 10, 2: 30, 3: 30, 4: 5}
    assert S.label_from_counts(counts, "majority") == 2  # tie 2/3: the lower code
    # mean = (10 + 60 + 90 + 20) / 75 = 2.4 -> 2
    assert S.label_from_counts(counts, "rounded_mean") == 2
    assert S.label_from_counts({1: 1, 2: 1}, "rounded_mean") == 2  # 1.5 rounds half up (round() gives 2 too)
    assert S.label_from_counts({2: 1, 3: 1}, "rounded_mean") == 3  # 2.5 -> 3 (Python's round gives 2)
    assert S.label_from_counts({0: 5, 1: 0, 2: 4}, "majority") == 0  # code 0 is a valid answer


def test_official_rule_reproduces_the_negative_code_bug():
    # valid 1 x 2, 2 x 1; one "don't know" (-1): (2 + 2 - 1) / 4 = 0.75 -> int 0
    assert S.label_from_counts({1: 2, 2: 1}, "official", {-1: 1}) == 0
    # without the missing code: 4 / 3 = 1.33 -> int 1 (truncation, not rounding)
    assert S.label_from_counts({1: 2, 2: 1}, "official") == 1
    # a question never asked (-4 for everyone): mean -4 -> |int| = 4, an answer nobody gave
    assert S.label_from_counts({0: 0, 1: 0, 2: 0}, "official", {-4: 100}) == 4
    # mostly "not asked": -3.99 -> int -3 -> 3
    assert S.label_from_counts({1: 1}, "official", {-4: 300}) == 3


def test_bad_counts_and_rules_are_refused():
    with pytest.raises(S.MissingAnswers):
        S.label_from_counts({1: 0, 2: 0}, "majority")
    with pytest.raises(S.SurveyError, match="negative codes"):
        S.label_from_counts({-1: 3, 1: 2}, "majority")
    with pytest.raises(S.SurveyError, match="allowed: majority, rounded_mean, official"):
        S.label_from_counts({1: 2}, "median")


def test_survey_shape_and_missing_answers(sv):
    assert len(sv.q_ids) == 50 and len(sv.countries) == 12
    assert sv.missing_pairs(["China"]) and len(sv.missing_pairs(["China"])) == 18
    assert len(sv.missing_pairs(["Arabic"])) == 2  # Q36 and Q226: neither Iraq nor Jordan asked
    with pytest.raises(S.MissingAnswers, match="China has no answers for Q125"):
        sv.distribution("China", 125)
    with pytest.raises(S.MissingAnswers):
        S.labels(sv, ["Chinese"], "majority", on_missing="raise")
    table = S.labels(sv, ["Chinese", "German"], "majority", on_missing="skip")
    assert len(table.skipped) == 18 and len(table.frame) == 32 + 50
    with pytest.raises(S.MissingAnswers, match="skipped"):
        table.label("Chinese", 125)
    assert not (table.frame["label"] == 0).any() or set(table.frame["q_id"][table.frame["label"] == 0]) <= set(range(122, 130))


def test_unknown_names_are_refused(sv):
    with pytest.raises(S.SurveyError, match="unknown culture or country 'Atlantis'; cultures: Arabic"):
        sv.distribution("Atlantis", 27)
    with pytest.raises(S.SurveyError, match="unknown question 999"):
        sv.question(999)


def test_pooled_culture_and_official_rule_on_real_data(sv):
    arabic = sv.pooled_counts("Arabic", 27)
    assert (arabic == sv.pooled_counts("Iraq", 27) + sv.pooled_counts("Jordan", 27)).all()
    cmp = S.compare_rules(sv, ["Chinese", "English"]).set_index("unit")
    assert cmp.loc["Chinese", "official: labels for unasked questions"] == 18
    assert cmp.loc["English", "official: labels for unasked questions"] == 0
    official = S.labels(sv, ["Chinese"], "official").as_dict()
    assert official[("Chinese", 132)] == 3  # as in the official WVQ_China.jsonl: robberies, never asked


# the first 50 rows (the WVS seeds) of the official WVQ_<culture>.jsonl, Scarelette/CultureLLM@dcdb64d
OFFICIAL_SEED_LABELS = {
    "China": "2 2 2 2 2 2 2 2 3 3 2 1 1 2 2 1 1 0 3 0 1 0 0 3 3 3 3 3 3 3 8 8 5 4 2 3 3 1 2 2 3 3 3 3 3 3 3 3 3 3",
    "Germany": "1 2 3 3 3 2 4 3 3 1 3 2 2 2 3 1 1 1 1 1 1 0 1 3 3 3 3 3 3 3 7 7 4 4 3 3 3 2 2 3 1 2 2 3 1 1 2 3 1 1",
    "United States": "1 2 3 3 3 2 3 2 3 2 3 2 2 2 3 1 1 1 1 1 1 1 1 3 2 3 2 3 3 3 7 7 4 4 3 2 3 2 3 2 1 2 2 2 2 2 2 2 2 1",
}


@pytest.mark.parametrize("country", sorted(OFFICIAL_SEED_LABELS))
def test_official_rule_reproduces_the_official_training_files(sv, country):
    ours = S.labels(sv, [country], "official").as_dict()
    assert " ".join(str(ours[(country, q)]) for q in sv.q_ids) == OFFICIAL_SEED_LABELS[country]


def test_divergence_measures():
    assert S.js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert S.js_divergence([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    assert S.wasserstein_ordinal([1, 0, 0], [0, 0, 1]) == pytest.approx(1.0)
    assert S.wasserstein_ordinal([1, 0, 0], [0, 1, 0]) == pytest.approx(0.5)


# -- chat format -------------------------------------------------------------------------------------

def test_chat_format_matches_the_paper(sv):
    q = sv.question(27)
    msgs = S.chat_example("German", q.text, q, 2)
    assert msgs == [
        {"role": "system", "content": "You are a German chatbot that knows German very well."},
        {"role": "user", "content": "Give me the answer from 1 to 4: Do you agree with One of my main goals in life "
                                    "has been to make my parents proud? 1. Strongly agree 2. Agree 3. Disagree "
                                    "4. Strongly disagree. You can only choose one option."},
        {"role": "assistant", "content": "2"}]
    q132 = sv.question(132)
    user = S.user_prompt(q132.text, q132)
    assert user.startswith("Give me the answer from 1 to 4: How frequently") and "Do you agree" not in user
    assert "1. Completely disagree 10. Completely agree." in S.user_prompt(sv.question(158).text, sv.question(158))
    assert S.chat_example(None, q.text, q)[0]["role"] == "user"
    with pytest.raises(S.SurveyError, match="not a code of Q27"):
        S.chat_example("German", q.text, q, 7)


def test_training_rows_skip_and_count_unasked_questions(sv):
    table = S.labels(sv, ["Chinese"], "majority", on_missing="skip")
    samples = pd.DataFrame({"q_id": [27, 27, 125], "step": [1, 2, 1], "text": ["a", "b", "c"], "similarity": [.9] * 3})
    rows, skipped = C.training_rows(["Chinese"], [27, 125], samples, table, sv, steps=(1,))
    assert [r.step for r in rows] == [0, 1] and skipped == [("Chinese", 125)]


# -- augmentation ------------------------------------------------------------------------------------

def test_choose_threshold_maximises_youden():
    assert A.choose_threshold([0.9, 0.8, 0.85], [0.3, 0.5]) == pytest.approx(0.8 - (0.8 - 0.5) / 2)
    t = A.choose_threshold([0.9, 0.7], [0.75, 0.2])  # overlap: best J = 0.5 at two places; the stricter wins
    assert t == pytest.approx(0.825)
    with pytest.raises(A.AugmentError):
        A.choose_threshold([], [0.1])


def test_clean_paraphrase_and_distinct_n():
    assert A._clean_paraphrase('1. "Making my parents proud is a key goal."\nmore') == "Making my parents proud is a key goal."
    assert A.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)


needs_wordnet = pytest.mark.skipif(not assets.is_ready("wordnet-3.0"), reason="wordnet-3.0 not fetched")


@needs_wordnet
def test_wordnet_synonyms_replace_whole_words_only():
    wn = A.load_wordnet()
    assert "significant" in [s.lower() for s in A.synonyms("important", "a", wn, 5)]
    words = dict(A.content_words("Men make better political leaders than women do", wn))
    assert "Men" in words and "than" not in words and "do" not in words
    assert A.replace_word("Men are not women", "Men", "man") == "Man are not women"
    assert A.replace_word("men and women", "men", "guys") == "guys and women"


needs_minilm = pytest.mark.skipif(not assets.is_ready("all-MiniLM-L6-v2"), reason="MiniLM not fetched")


@needs_minilm
def test_filter_keeps_paraphrases_and_rejects_sibling_questions(sv):
    from fmbook.core.text_encoder import load_sentence_encoder

    enc = load_sentence_encoder("all-MiniLM-L6-v2")
    pairs = A.calibration_pairs([sv.question(q) for q in sv.q_ids])
    sims = A.similarity(enc, list(pairs["a"]), list(pairs["b"]))
    pairs["sim"] = sims
    t = A.choose_threshold(pairs[pairs.kind == "paraphrase"]["sim"], pairs[pairs.kind == "sibling"]["sim"])
    keep = lambda a, b: A.similarity(enc, [a], [b])[0] > t  # noqa: E731
    assert keep(sv.question(27).text, "Making my parents proud has been one of my main aims in life.")
    assert keep(sv.question(169).text, "When science and religion disagree, religion is always correct.")
    assert not keep(sv.question(132).text, sv.question(136).text)  # robberies vs drug sales: another question
    assert not keep(sv.question(27).text, sv.question(224).text)
    assert 0.75 < t < 0.9
    # what no threshold catches: a negation is closer to the seed than a true paraphrase
    assert keep(sv.question(29).text, A.negate(sv.question(29).text))


# -- folds ----------------------------------------------------------------------------------------------

def test_leave_questions_out_folds_never_leak(sv):
    folds = E.question_folds(sv.q_ids, 5, seed=3)
    assert len(folds) == 5
    seen = []
    for f in folds:
        assert not set(f.train) & set(f.test)
        assert set(f.train) | set(f.test) == set(sv.q_ids)
        seen += f.test
    assert sorted(seen) == sv.q_ids  # every question is held out exactly once
    with pytest.raises(S.SurveyError, match="n_folds"):
        E.question_folds(sv.q_ids, 1)
    samples = pd.DataFrame({"q_id": [27] * 4 + [28] * 3, "text": list("abcdefg"), "step": 1})
    train, test = E.split_variants(samples, 2, seed=0)
    assert set(train["text"]).isdisjoint(test["text"]) and len(test) == 4


def test_test_items_hold_out_questions_and_skip_unasked(sv):
    fold = E.Fold(0, train=(27, 28), test=(125, 29))
    heldout = pd.DataFrame({"q_id": [27, 125], "text": ["p27", "p125"]})
    samples = pd.DataFrame({"q_id": [29], "text": ["v29"], "step": [1]})
    items, skipped = C.test_items(["Chinese"], fold, heldout, samples, sv)
    assert ("Chinese", 125) in skipped
    assert set(items[items.split == "question"]["q_id"]) == {29}
    assert list(items[items.split == "paraphrase"]["text"]) == ["p27"]


# -- models (tiny random Qwen2 saved locally: the `full` code path) ----------------------------------------

@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-qwen2-culture")
    corpus = ["Give me the answer from 1 to 4: Do you agree with men? 1. Strongly agree 2. Agree",
              "You are a German chatbot that knows German very well.", "0 1 2 3 4 5 6 7 8 9 10"] * 20
    save_tiny_qwen2(folder, corpus, vocab_size=300)
    return folder


@pytest.fixture()
def tiny(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("FMBOOK_CACHE", str(tmp_path / "cache"))
    model = F.load_base(str(tiny_folder))
    model.cache = lm.OutputCache(tmp_path / "outputs.sqlite")
    return model


def test_option_distribution_matches_log_likelihood_scoring(tiny, sv):
    q4, q10 = sv.question(27), sv.question(158)
    prompts = [S.chat_example("German", q4.text, q4), S.chat_example("German", q10.text, q10)]
    d4, d10 = E.option_distribution(tiny, prompts, [q4, q10], use_cache=False)
    assert d4.shape == (4,) and d10.shape == (10,)
    assert d4.sum() == pytest.approx(1) and d10.sum() == pytest.approx(1)
    # for single-token options the distribution is the renormalised next-token likelihood
    scores = tiny.score([prompts[0]] * 4, [str(c) for c in q4.codes], use_cache=False)
    expected = np.exp(scores) / np.exp(scores).sum()
    if all(len(tiny.tokenizer(str(c), add_special_tokens=False)["input_ids"]) == 1 for c in q4.codes):
        assert d4 == pytest.approx(expected, rel=1e-4)
    again = E.option_distribution(tiny, prompts, [q4, q10])  # cached copy is the same
    assert again[0] == pytest.approx(d4) and again[1] == pytest.approx(d10)


def test_adapter_trains_caches_and_leaves_the_base_unchanged(tiny, sv):
    q = sv.question(27)
    rows = [F.TrainRow(tuple(S.chat_example(u, q.text, q, 2)), u, 27, 0) for u in ("German", "Chinese")]
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    settings = F.LoraSettings(r=4, alpha=8, max_steps=3, batch_size=2)
    a = F.train_adapter(tiny, rows, settings, name="t")
    assert not a.from_cache and len(a.history["loss"]) == 3 and a.tokens_per_s > 0
    assert (a.folder / "adapter_config.json").is_file()
    after = tiny.model.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    again = F.train_adapter(tiny, rows, settings, name="t")
    assert again.from_cache and again.key == a.key
    other = F.train_adapter(tiny, rows[:1], settings, name="t")
    assert other.key != a.key  # the data are part of the key
    with F.tuned(tiny, a) as m:
        d = E.option_distribution(m, [S.chat_example("German", q.text, q)], [q], use_cache=False)[0]
        assert m.cache_id != tiny.cache_id
    base_d = E.option_distribution(tiny, [S.chat_example("German", q.text, q)], [q], use_cache=False)[0]
    assert d.shape == base_d.shape == (4,)
    assert all(torch.equal(before[k], tiny.model.state_dict()[k]) for k in before)


def test_answer_only_loss_and_end_of_turn(tiny, sv):
    assert F.end_of_turn(tiny.tokenizer) == "<eos>"
    q = sv.question(27)
    row = F.TrainRow(tuple(S.chat_example("German", q.text, q, 3)), "German", 27, 0)
    (ids, n_ans), = F.encode_rows(tiny.tokenizer, [row])
    assert tiny.tokenizer.decode(ids[-n_ans:]) == "3<eos>"


def test_lora_settings_are_the_papers_and_qlora_needs_a_gpu(tiny_folder):
    s = F.LoraSettings()
    assert (s.r, s.alpha, s.dropout, s.epochs, s.batch_size, s.lr, s.schedule) == (64, 16, 0.1, 6.0, 4, 2e-4, "constant")
    assert F.LoraSettings(max_steps=5).steps(100) == 5 and s.steps(10) == 18
    with pytest.raises(F.FinetuneError, match="schedule"):
        F.LoraSettings(schedule="cosine")
    if not torch.cuda.is_available():
        with pytest.raises(F.FinetuneError, match="CUDA"):
            F.load_base(str(tiny_folder), quantize_4bit=True)


# -- claims ----------------------------------------------------------------------------------------------

def _scores(effect: float, n_q: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for split in ("paraphrase", "question"):
        for q in range(n_q):
            for cond, p in (("prompt_only", 0.3), ("culturellm", 0.3 + effect), ("one_wvs_only", 0.3),
                            ("one_culturellm", 0.3 + effect)):
                rows.append({"unit": "German", "q_id": q, "split": split, "condition": cond,
                             "exact": float(rng.random() < p), "distance": 0.2, "loglik": 0.1})
    return pd.DataFrame(rows)


def test_claims_verdicts_follow_the_intervals():
    strong = C.claims(_scores(0.6, n_q=200))
    assert len(strong) == 6
    by = {(c.claim.split(" — ")[0][:20], c.claim.split(" — ")[1]): c for c in strong}
    assert all(c.verdict == "holds" for c in strong if c.direction == "increase")
    assert all(c.level == pytest.approx(1 - 0.05 / 6) for c in strong)
    none = C.claims(_scores(0.0, n_q=8))
    assert all(c.verdict == "not resolved" for c in none if c.direction == "increase")
    assert all(c.resolvable and c.resolvable > 0 for c in none)
    few = C.claims(_scores(0.6, n_q=3))  # three clusters: nothing can be resolved
    assert all(c.verdict == "not resolved" and c.resolvable is None and "clusters" in c.note for c in few)
    with pytest.raises(S.SurveyError, match="metric"):
        C.claims(_scores(0.0), metric="f1")


def test_downstream_tasks_are_named_and_macro_f1():
    assert {t.hub_id for t in C.DOWNSTREAM} == {"strombergnlp/offenseval_2020", "cardiffnlp/tweet_eval"}
    assert C.macro_f1([0, 1, 1, 0], [0, 1, 0, 0]) == pytest.approx((0.8 + 2 / 3) / 2)


def test_sample_per_group_caps_each_group():
    frame = pd.DataFrame({"q": [1, 1, 1, 2], "t": list("abcd")})
    out = E.sample_per_group(frame, "q", 2, seed=0)
    assert sorted(out.groupby("q").size().tolist()) == [1, 2]
    assert out.equals(E.sample_per_group(frame, "q", 2, seed=0))
