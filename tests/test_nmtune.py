"""fmbook.nmtune: label noise, spectrum metrics, the NMTune head and its losses on small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fmbook import nmtune as nm

# ---------------------------------------------------------------------------- label noise


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.2, 0.3])
def test_realised_noise_rate(rate):
    labels = np.arange(20000) % 10
    noisy = nm.inject_symmetric_noise(labels, rate, 10, seed=0)
    # exactly round(rate * N) labels are redrawn ...
    assert noisy.resampled.sum() == round(rate * 20000) and noisy.resampled_rate == pytest.approx(rate)
    # ... uniformly over all 10 classes, so about a tenth of them land back on the true class
    assert noisy.expected_realised_rate == pytest.approx(rate * 0.9)
    assert abs(noisy.realised_rate - rate * 0.9) < 0.01
    # labels that were not redrawn are untouched
    np.testing.assert_array_equal(noisy.labels[~noisy.resampled], labels[~noisy.resampled])


def test_noise_is_seeded_and_validated():
    labels = np.arange(1000) % 6
    a = nm.inject_symmetric_noise(labels, 0.2, 6, seed=1)
    b = nm.inject_symmetric_noise(labels, 0.2, 6, seed=1)
    c = nm.inject_symmetric_noise(labels, 0.2, 6, seed=2)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    np.testing.assert_array_equal(nm.inject_symmetric_noise(labels, 0.0, 6, seed=0).labels, labels)
    with pytest.raises(ValueError, match="noise_rate"):
        nm.inject_symmetric_noise(labels, 1.5, 6, seed=0)
    with pytest.raises(ValueError, match="labels must lie"):
        nm.inject_symmetric_noise(labels, 0.1, 3, seed=0)


def test_noise_confusion_rows():
    labels = np.arange(30000) % 5
    noisy = nm.inject_symmetric_noise(labels, 0.3, 5, seed=0)
    confusion = nm.noise_confusion(noisy.true_labels, noisy.labels, 5)
    np.testing.assert_allclose(confusion.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.diag(confusion), 1 - 0.3 * 4 / 5, atol=0.02)
    off = confusion[~np.eye(5, dtype=bool)]
    np.testing.assert_allclose(off, 0.3 / 5, atol=0.02)


# ---------------------------------------------------------------------------- spectrum


def _entropy(p):
    p = np.asarray(p, float)
    return float(-(p * np.log(p)).sum())


def test_spectrum_metrics_on_hand_made_spectra():
    sigma = np.array([3.0, 2.0, 1.0])
    assert nm.singular_value_entropy(sigma) == pytest.approx(_entropy([0.5, 1 / 3, 1 / 6]))
    assert nm.largest_singular_value_ratio(sigma) == pytest.approx(math.log(2))
    # a diagonal matrix has its diagonal as singular values
    x = np.zeros((5, 3))
    x[0, 0], x[1, 1], x[2, 2] = 1.0, 3.0, 2.0
    np.testing.assert_allclose(nm.singular_values(x, prepare=False), [3.0, 2.0, 1.0])
    # flat spectrum: SVE = LSVR = log n; rank one: both 0
    flat = np.eye(4)
    assert nm.singular_value_entropy(nm.singular_values(flat, prepare=False)) == pytest.approx(math.log(4))
    assert nm.largest_singular_value_ratio(nm.singular_values(flat, prepare=False)) == pytest.approx(math.log(4))
    rank_one = np.outer(np.arange(1, 6), [1.0, 2.0, 0.5])
    sv = nm.singular_values(rank_one, prepare=False)
    assert nm.singular_value_entropy(sv[sv > 1e-9]) == pytest.approx(0.0, abs=1e-12)
    assert nm.largest_singular_value_ratio(sv) == pytest.approx(0.0, abs=1e-9)


def test_prepare_features_matches_official_preprocessing():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)) * 3 + 1
    prepared = nm.prepare_features(x)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(prepared, unit - unit.mean(axis=1, keepdims=True))
    np.testing.assert_allclose(prepared.mean(axis=1), 0.0, atol=1e-12)
    # scale of a feature vector does not matter
    np.testing.assert_allclose(nm.prepare_features(x * 7.0), prepared)
    metrics = nm.spectrum_metrics(x)
    assert metrics.normalised.sum() == pytest.approx(1.0)
    assert 0 < metrics.lsvr < metrics.sve <= math.log(8) + 1e-9


# ---------------------------------------------------------------------------- NMTune losses


def test_covariance_loss_equals_direct_computation():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(32, 6)) @ rng.normal(size=(6, 6))
    cov = np.cov(z, rowvar=False)  # unbiased, as the official code
    expected = (cov ** 2).sum() - (np.diag(cov) ** 2).sum()
    got = nm.covariance_loss(torch.tensor(z))
    assert float(got) == pytest.approx(expected / 6, rel=1e-10)


def test_dominant_singular_values_equals_direct_computation():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(40, 12))
    sigma = np.linalg.svd(z, compute_uv=False)
    expected = (sigma / sigma.sum())[:5].mean()
    assert float(nm.dominant_singular_values(torch.tensor(z), 5)) == pytest.approx(expected, rel=1e-10)
    # the top-5 share of a flat spectrum is 5/12 of the mass spread over 5: 1/12 each
    assert float(nm.dominant_singular_values(torch.eye(12, dtype=torch.float64), 5)) == pytest.approx(1 / 12)


def test_consistency_loss_is_zero_for_rescaled_copies():
    f = torch.randn(10, 4)
    assert float(nm.consistency_loss(3.0 * f, f)) == pytest.approx(0.0, abs=1e-12)
    assert float(nm.consistency_loss(-f, f)) > 0


def test_each_loss_term_has_finite_nonzero_gradients():
    torch.manual_seed(0)
    head = nm.NMTuneHead(dim=8, num_classes=3)
    f = torch.randn(16, 8)
    y = torch.randint(0, 3, (16,))
    terms = {
        "ce": lambda z, logits: F.cross_entropy(logits, y),
        "consistency": lambda z, logits: nm.consistency_loss(z, f),
        "covariance": lambda z, logits: nm.covariance_loss(z),
        "dominant_sv": lambda z, logits: -nm.dominant_singular_values(z, 5),
    }
    for name, term in terms.items():
        head.zero_grad()
        z, logits = head(f)
        term(z, logits).backward()
        grads = [p.grad for p in [head.scale, head.mlp[0].weight, head.mlp[3].weight]]
        for grad in grads:
            assert grad is not None and torch.isfinite(grad).all(), name
            assert grad.abs().sum() > 0, name


def test_head_architecture_and_init():
    head = nm.NMTuneHead(dim=6, num_classes=4)
    assert [type(m).__name__ for m in head.mlp] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head.mlp[0].out_features == 24 and head.mlp[3].out_features == 6
    assert head.scale.shape == (1, 6) and torch.equal(head.scale.data, torch.ones(1, 6))
    assert torch.equal(head.classifier.bias.data, torch.zeros(4))
    f = torch.randn(5, 6)
    head.eval()
    z, _ = head(f)
    torch.testing.assert_close(z, head.scale * head.mlp(f) + f)


def test_paper_defaults():
    c = nm.NMTuneConfig()
    assert (c.lr, c.weight_decay, c.batch_size, c.epochs) == (1e-3, 1e-4, 64, 30)
    assert (c.consistency_weight, c.covariance_weight, c.spectral_weight, c.top_k) == (1.0, 0.04, 0.001, 5)
    assert (c.mlp_ratio, c.scale_init) == (4, 1.0)
    assert nm.LinearProbeConfig().lr == 1e-2 and nm.LinearProbeConfig().epochs == 30
    with pytest.raises(ValueError, match="batch_size"):
        nm.NMTuneConfig(batch_size=1)
    with pytest.raises(ValueError, match="linear, mlp, nmtune"):
        nm.default_head_config("lora")


def _blobs(n=240, dim=10, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    y = np.arange(n) % classes
    return (centres[y] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32), y


def _params_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_zero_regularizers_reduce_nmtune_to_the_mlp_head():
    """Exact sense: with consistency, covariance and spectral weights all 0, the NMTune loss *is*
    the cross-entropy of the residual MLP head (same value, bit for bit), so training from the same
    seed gives bit-identical weights to the MLP-head baseline; any non-zero weight changes them."""
    x, y = _blobs()
    zero = nm.NMTuneConfig(consistency_weight=0.0, covariance_weight=0.0, spectral_weight=0.0, epochs=3)
    head = nm.NMTuneHead(10, 3)
    z, logits = head(torch.from_numpy(x[:64]))
    loss, terms = nm.nmtune_loss(z, torch.from_numpy(x[:64]), logits, torch.from_numpy(y[:64]), zero)
    assert torch.equal(loss, F.cross_entropy(logits, torch.from_numpy(y[:64]))) and set(terms) == {"ce"}
    as_nmtune = nm.train_head(x, y, 3, zero, method="nmtune")
    as_mlp = nm.train_head(x, y, 3, nm.default_head_config("mlp", epochs=3))
    assert as_mlp.method == "mlp" and _params_equal(as_nmtune.module, as_mlp.module)
    full = nm.train_head(x, y, 3, nm.NMTuneConfig(epochs=3))
    assert full.method == "nmtune" and not _params_equal(full.module, as_mlp.module)


def test_heads_learn_and_are_deterministic():
    x, y = _blobs()
    for method in nm.HEAD_METHODS:
        config = nm.default_head_config(method, seed=0)
        a = nm.train_head(x, y, 3, config)
        b = nm.train_head(x, y, 3, config)
        assert a.method == method and _params_equal(a.module, b.module)
        assert a.accuracy(x, y) > 0.95
        assert a.history["ce"][-1] < a.history["ce"][0]
    with pytest.raises(TypeError, match="LinearProbeConfig"):
        nm.train_head(x, y, 3, nm.NMTuneConfig(epochs=1), method="linear")


def test_mean_confidence_interval():
    mean, half = nm.mean_confidence_interval([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0) and half == pytest.approx(4.302652729911275 * 1 / math.sqrt(3))
    assert nm.mean_confidence_interval([0.5]) == (0.5, 0.0)


def test_downstream_protocol_keeps_new_classes_new():
    assert not set(nm.PRETRAIN_CLASSES) & set(nm.HELDOUT_CLASSES)
    assert sorted(nm.PRETRAIN_CLASSES + nm.HELDOUT_CLASSES) == list(range(10))
    tasks = nm.downstream_tasks(nm.TransferSetup(probe_per_class=5, eval_per_class=5))
    names = {t.name: t for t in tasks}
    assert list(names) == ["heldout-4", "fmnist-10", "digits"]
    domains = {name: dom for t in tasks for name, (_, dom) in t.evals.items()}
    assert domains == {"heldout-4": "ID", "fmnist-10": "ID", "invert": "OOD", "sketch": "OOD",
                       "blur": "OOD", "rotate": "OOD", "digits": "OOD"}
    assert names["heldout-4"].probe.classes == ("Dress", "Coat", "Shirt", "Sneaker")
    with pytest.raises(ValueError, match="allowed: invert"):
        nm.downstream_tasks(nm.TransferSetup(shifts=("fog",)))


def test_claim_verdict_three_ways():
    assert nm.claim_verdict([1.0, 1.2, 0.9, 1.1])[2] is True
    assert nm.claim_verdict([-1.0, -1.2, -0.9, -1.1])[2] is False
    assert nm.claim_verdict([1.0, -1.0, 0.5, -0.4])[2] is None
    assert nm.claim_verdict([2.0])[2] is None  # one pair: no interval, no verdict
