"""fmbook.core.text_encoder: loading by asset name / folder / hub id, and the embedding cache.

The folder path (the same code as a hub id, minus the download) is tested with a tiny randomly
initialised BERT sentence-transformer saved to a temporary folder; the real offline asset is tested
when it is in the cache.
"""

from __future__ import annotations

import numpy as np
import pytest

from fmbook.core import assets

from fmbook.core import text_encoder as te

WORDS = ["the", "model", "paper", "language", "federated", "learning", "image", "noise", "label",
         "emotion", "prompt", "culture", "a", "of", "and", "on", "with", "clip"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer, 32-wide random BERT with mean pooling, saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny-st")
    hf_dir, st_dir = root / "hf", root / "st"
    hf_dir.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz.,"]
    (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(hf_dir / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    word = Transformer(str(hf_dir), max_seq_length=48)
    dim = word.get_embedding_dimension() if hasattr(word, "get_embedding_dimension") \
        else word.get_word_embedding_dimension()
    pooling = Pooling(dim, pooling_mode="mean")
    SentenceTransformer(modules=[word, pooling], device="cpu").save(str(st_dir))
    return st_dir


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FMBOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_unknown_name_lists_the_known_encoders():
    with pytest.raises(te.EncoderError, match="all-MiniLM-L6-v2"):
        te.load_sentence_encoder("minilm")


def test_an_asset_of_another_kind_is_refused():
    with pytest.raises(te.EncoderError, match="dataset, not a text encoder"):
        te.load_sentence_encoder("fashion-mnist")


def test_bad_max_seq_length_is_refused():
    with pytest.raises(te.EncoderError, match="max_seq_length"):
        te.load_sentence_encoder("all-MiniLM-L6-v2", max_seq_length=0)


def test_folder_loads_through_the_same_function(tiny_model_dir, tmp_cache):
    encoder = te.load_sentence_encoder(str(tiny_model_dir))
    assert encoder.kind == "folder" and encoder.dim == 32 and encoder.max_seq_length == 48
    result = te.embed(["the model of a paper", "federated learning with clip"], encoder, batch_size=2)
    assert result.vectors.shape == (2, 32) and result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, rtol=1e-5)
    assert result.n_computed == 2 and result.texts_per_s and result.texts_per_s > 0


def test_cache_hit_is_free_and_identical(tiny_model_dir, tmp_cache):
    encoder = te.load_sentence_encoder(str(tiny_model_dir))
    texts = ["label noise in pre-training", "emotion prompt", "culture and language", "emotion prompt"]
    first = te.embed(texts, encoder, batch_size=2)
    assert (first.n_computed, first.n_cached) == (3, 0)  # the repeated text is embedded once
    assert first.cache_file is not None and first.cache_file.is_file()
    assert str(first.cache_file).startswith(str(tmp_cache))
    second = te.embed(texts, encoder, batch_size=2)
    assert (second.n_computed, second.n_cached) == (0, 3)
    assert second.seconds == 0.0 and second.texts_per_s is None
    np.testing.assert_array_equal(first.vectors, second.vectors)
    np.testing.assert_array_equal(first.vectors[1], first.vectors[3])
    third = te.embed(texts + ["a new text on image noise"], encoder)
    assert (third.n_computed, third.n_cached) == (1, 3)
    np.testing.assert_array_equal(third.vectors[:4], first.vectors)


def test_cached_vectors_match_a_fresh_computation(tiny_model_dir, tmp_cache):
    encoder = te.load_sentence_encoder(str(tiny_model_dir))
    texts = ["a paper on noise", "the clip model"]
    te.embed(texts, encoder)
    cached = te.embed(texts, encoder).vectors
    fresh = te.embed(texts, encoder, use_cache=False)
    assert fresh.n_computed == 2 and fresh.cache_file is None
    np.testing.assert_allclose(cached, fresh.vectors, atol=1e-6)


def test_cache_key_covers_what_changes_the_vectors(tiny_model_dir, tmp_cache):
    full = te.load_sentence_encoder(str(tiny_model_dir))
    short = te.load_sentence_encoder(str(tiny_model_dir), max_seq_length=8)
    assert full.cache_key != short.cache_key
    assert te.cache_file(full, True) != te.cache_file(full, False)
    long_text = " ".join(WORDS * 3)
    a = te.embed([long_text], full).vectors
    b = te.embed([long_text], short).vectors
    assert te.embed([long_text], short).n_cached == 1
    assert not np.allclose(a, b)  # truncation changed the vector, and the caches kept them apart


def test_embed_refuses_bad_arguments(tiny_model_dir, tmp_cache):
    encoder = te.load_sentence_encoder(str(tiny_model_dir))
    with pytest.raises(te.EncoderError, match="not one string"):
        te.embed("one text", encoder)
    with pytest.raises(te.EncoderError, match="batch_size"):
        te.embed(["x"], encoder, batch_size=0)
    assert te.embed([], encoder).vectors.shape == (0, 32)


@pytest.mark.skipif(not assets.is_ready("all-MiniLM-L6-v2"), reason="asset all-MiniLM-L6-v2 not fetched")
def test_minilm_asset_loads_offline(monkeypatch, tmp_path):
    encoder = te.load_sentence_encoder("all-MiniLM-L6-v2")
    assert encoder.kind == "asset" and encoder.dim == 384 and encoder.max_seq_length == 256
    monkeypatch.setenv("FMBOOK_CACHE", str(tmp_path))  # keep the user's cache out of the test
    vectors = te.embed(["Federated learning with CLIP.", "Personalized federated learning.",
                        "Emotional stimuli in prompts."], encoder).vectors
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2]  # a real encoder: the two federated texts are closer


def test_refresh_recomputes_and_rewrites_the_cache(tiny_model_dir, tmp_cache):
    encoder = te.load_sentence_encoder(str(tiny_model_dir))
    texts = ["label noise", "clip adapters"]
    te.embed(texts, encoder)
    timed = te.embed(texts, encoder, refresh=True)
    assert (timed.n_computed, timed.n_cached) == (2, 0) and timed.seconds > 0
    assert te.embed(texts, encoder).n_cached == 2
