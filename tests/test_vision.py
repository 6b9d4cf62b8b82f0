"""fmbook.core.vision: bit-for-bit reproducible training, the weight cache, features, hub backbones."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from fmbook.core import datasets as ds
from fmbook.core import vision


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FMBOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def small_set():
    digits = ds.load_digits_28()
    return ds.stratified_subsample(digits, 12, seed=0)  # 120 images, 10 classes


TINY = vision.EncoderConfig(width=4, epochs=2, batch_size=32, seed=3)


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_is_bit_for_bit_reproducible(cache, small_set):
    first = vision.train_encoder(small_set, TINY, use_cache=False)
    second = vision.train_encoder(small_set, TINY, use_cache=False)
    assert _states_equal(first.encoder, second.encoder)
    assert _states_equal(first.classifier, second.classifier)
    assert first.history == second.history
    other_seed = vision.train_encoder(small_set, vision.EncoderConfig(width=4, epochs=2, batch_size=32, seed=4),
                                      use_cache=False)
    assert not _states_equal(first.encoder, other_seed.encoder)


def test_training_leaves_global_torch_state_alone(cache, small_set):
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    vision.train_encoder(small_set, TINY, use_cache=False)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_cache_reloads_instead_of_retraining(cache, small_set, monkeypatch):
    trained = vision.train_encoder(small_set, TINY)
    assert not trained.from_cache and (cache / "encoders" / trained.key / "weights.pt").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("the cached encoder should have been loaded, not retrained")

    monkeypatch.setattr(torch.optim, "SGD", no_training)
    again = vision.train_encoder(small_set, TINY)
    assert again.from_cache and again.key == trained.key
    assert _states_equal(trained.encoder, again.encoder) and again.history == trained.history
    monkeypatch.undo()
    # anything that determines the weights changes the key: config, labels, data
    labels = small_set.labels.copy()
    labels[0] = (labels[0] + 1) % 10
    keys = {
        trained.key,
        vision.encoder_cache_key(vision.EncoderConfig(width=4, epochs=3, batch_size=32, seed=3), small_set, small_set.labels, None),
        vision.encoder_cache_key(TINY, small_set, labels, None),
        vision.encoder_cache_key(TINY, small_set.take(np.arange(100), "first100"), small_set.labels[:100], None),
    }
    assert len(keys) == 4


def test_features_batched_and_cached(cache, small_set):
    trained = vision.train_encoder(small_set, TINY)
    full = vision.extract_features(trained.encoder, small_set.images, batch_size=1000)
    chunked = vision.extract_features(trained.encoder, small_set.images, batch_size=7)
    assert full.shape == (120, 16) and full.dtype == np.float32
    np.testing.assert_allclose(full, chunked, rtol=1e-5, atol=1e-6)
    cached = vision.cached_features(trained, small_set)
    assert (cache / "features" / trained.key / f"{small_set.fingerprint}.npy").is_file()
    np.testing.assert_array_equal(cached, vision.cached_features(trained, small_set))


def test_history_and_eval_accuracy(cache, small_set):
    trained = vision.train_encoder(small_set, TINY, eval_set=small_set, use_cache=False)
    assert trained.history["epoch"] == [1, 2]
    assert all(0.0 <= a <= 1.0 for a in trained.history["eval_acc"] + trained.history["train_acc"])
    assert vision.train_encoder(small_set, TINY, use_cache=False).history["eval_acc"] == [None, None]


def test_bad_names_and_values():
    with pytest.raises(ValueError, match="tiny-resnet"):
        vision.load_image_encoder("resnet-9000")
    with pytest.raises(ValueError, match="EncoderConfig.epochs"):
        vision.EncoderConfig(epochs=0)


@pytest.mark.parametrize("arch", ["resnet", "vit", "clip"])
def test_hub_backbone_path_on_a_tiny_local_model(cache, tmp_path, small_set, arch):
    """The ``full`` profile's path: AutoModel.from_pretrained on a saved (randomly initialised,
    tiny) model of the real architecture, wrapped, trained one epoch and used for features."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if arch == "resnet":
        config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_channels=3)
        model, dim = transformers.ResNetModel(config), 16
    elif arch == "vit":
        config = transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=32, image_size=32, patch_size=8)
        model, dim = transformers.ViTModel(config), 16
    else:  # CLIP: AutoModel gives the two-tower model; features come from get_image_features
        config = transformers.CLIPConfig(
            text_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 32, "vocab_size": 64},
            vision_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                           "intermediate_size": 32, "image_size": 32, "patch_size": 8},
            projection_dim=12)
        model, dim = transformers.CLIPModel(config), 12
    folder = tmp_path / f"tiny-{arch}"
    model.save_pretrained(folder)
    encoder = vision.load_image_encoder(str(folder))
    assert isinstance(encoder, vision.HubImageEncoder) and encoder.feature_dim == dim
    features = vision.extract_features(encoder, small_set.images[:10], batch_size=4)
    assert features.shape == (10, dim) and np.isfinite(features).all()
    config_hub = vision.EncoderConfig(backbone=str(folder), epochs=1, batch_size=40, seed=0)
    subset = small_set.take(np.arange(40), "first40")
    trained = vision.train_encoder(subset, config_hub)
    assert trained.feature_dim == dim and not trained.from_cache
    reloaded = vision.train_encoder(subset, config_hub)
    assert reloaded.from_cache and _states_equal(trained.encoder, reloaded.encoder)
