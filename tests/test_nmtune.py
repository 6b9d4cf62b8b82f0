"""fmbook.nmtune: label noise, spectrum metrics, the NMTune head and its losses on small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dataclasses import replace

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


@pytest.mark.parametrize("preset", nm.PRESETS)
def test_each_loss_term_has_finite_nonzero_gradients(preset):
    torch.manual_seed(0)
    config = nm.default_head_config("nmtune", preset=preset)
    head = nm.NMTuneHead.from_config(8, 3, config)
    f = torch.randn(16, 8)
    y = torch.randint(0, 3, (16,))
    terms = {
        "ce": lambda z, logits: F.cross_entropy(logits, y),
        "consistency": lambda z, logits: nm.consistency_loss(z, f),
        "covariance": lambda z, logits: nm.covariance_loss(z),
        "dominant_sv": lambda z, logits: -nm.dominant_singular_values(z, config.top_k),
    }
    for name, term in terms.items():
        head.zero_grad()
        z, logits = head(f)
        term(z, logits).backward()
        params = [head.mlp[0].weight, head.mlp[-1].weight] + ([head.scale] if config.residual else [])
        grads = [p.grad for p in params]
        for grad in grads:
            assert grad is not None and torch.isfinite(grad).all(), name
            assert grad.abs().sum() > 0, name


def test_head_architecture_and_init_of_both_presets():
    official = nm.NMTuneHead.from_config(6, 4, nm.OFFICIAL_CODE)
    assert [type(m).__name__ for m in official.mlp] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert official.mlp[0].out_features == 24 and official.mlp[3].out_features == 6
    assert official.scale.shape == (1, 6) and torch.equal(official.scale.data, torch.ones(1, 6))
    assert torch.equal(official.classifier.bias.data, torch.zeros(4))
    f = torch.randn(5, 6)
    official.eval()
    z, _ = official(f)
    torch.testing.assert_close(z, official.scale * official.mlp(f) + f)
    # the paper's: a 2-layer D -> 4D -> D ReLU MLP whose output is z (Figure 17), no scale, no BatchNorm
    paper = nm.NMTuneHead.from_config(6, 4, nm.NMTuneConfig())
    assert [type(m).__name__ for m in paper.mlp] == ["Linear", "ReLU", "Linear"]
    assert paper.mlp[0].out_features == 24 and not hasattr(paper, "scale")
    torch.testing.assert_close(paper(f)[0], paper.mlp(f))


def test_paper_and_official_presets():
    c = nm.NMTuneConfig()  # the paper's: Eq. 6 with lambda = 0.01, L_SVD = -sigma_1 / sum sigma
    assert (c.lr, c.weight_decay, c.batch_size, c.epochs) == (1e-3, 1e-4, 64, 30)
    assert (c.consistency_weight, c.covariance_weight, c.spectral_weight, c.top_k) == (0.01, 0.01, 0.01, 1)
    assert (c.mlp_ratio, c.residual, c.batch_norm) == (4, False, False)
    o = nm.OFFICIAL_CODE  # the official README and model code
    assert (o.consistency_weight, o.covariance_weight, o.spectral_weight, o.top_k) == (1.0, 0.04, 0.001, 5)
    assert (o.residual, o.batch_norm, o.scale_init, o.lr, o.weight_decay) == (True, True, 1.0, 1e-3, 1e-4)
    assert (nm.LinearProbeConfig().lr, nm.LinearProbeConfig().weight_decay) == (0.1, 0.0)
    assert nm.default_head_config("linear", preset="official code").lr == 0.01
    heads = nm.preset_heads("official code", seed=3, epochs=2)
    assert list(heads) == ["linear probe", "MLP", "NMTune"]
    assert heads["NMTune"] == replace(nm.OFFICIAL_CODE, seed=3, epochs=2)
    assert heads["MLP"] == replace(nm.OFFICIAL_CODE, seed=3, epochs=2, consistency_weight=0.0,
                                   covariance_weight=0.0, spectral_weight=0.0)
    assert nm.preset_heads()["NMTune"] == nm.NMTuneConfig() and nm.DEFAULT_PRESET == "paper"
    with pytest.raises(ValueError, match="batch_size"):
        nm.NMTuneConfig(batch_size=1)
    with pytest.raises(ValueError, match="linear, mlp, nmtune"):
        nm.default_head_config("lora")
    with pytest.raises(nm.PresetError, match="'paper', 'official code'"):
        nm.preset_heads("authors")


def _by_hand_loss(z, f, logits, y, w_mse, w_cov, w_svd, top_k):
    """Eq. 6 written out with numpy from the definitions (MSE of L2-normalised rows, (1/D) sum of
    squared off-diagonal covariances, mean of the top-k normalised singular values)."""
    z, f, logits = (t.detach().double().numpy() for t in (z, f, logits))
    shifted = logits - logits.max(1, keepdims=True)
    ce = float(-(shifted[np.arange(len(y)), y] - np.log(np.exp(shifted).sum(1))).mean())
    nz = z / np.linalg.norm(z, axis=1, keepdims=True)
    nf = f / np.linalg.norm(f, axis=1, keepdims=True)
    mse = float(((nz - nf) ** 2).mean())
    cov = np.cov(z, rowvar=False)
    cov_term = float(((cov ** 2).sum() - (np.diag(cov) ** 2).sum()) / z.shape[1])
    sigma = np.linalg.svd(z, compute_uv=False)
    svd = float((sigma / sigma.sum())[:top_k].mean())
    return ce + w_mse * mse + w_cov * cov_term - w_svd * svd, {"ce": ce, "consistency": mse,
                                                             "covariance": cov_term, "dominant_sv": svd}


@pytest.mark.parametrize("preset", nm.PRESETS)
def test_each_preset_loss_equals_eq6_by_hand(preset):
    torch.manual_seed(0)
    config = nm.default_head_config("nmtune", preset=preset)
    head = nm.NMTuneHead.from_config(8, 3, config).double()
    f = torch.randn(16, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    z, logits = head(f)
    loss, terms = nm.nmtune_loss(z, f, logits, y, config)
    weights = {"paper": (0.01, 0.01, 0.01, 1), "official code": (1.0, 0.04, 0.001, 5)}[preset]
    expected, expected_terms = _by_hand_loss(z, f, logits, y.numpy(), *weights)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    for name, value in expected_terms.items():
        assert terms[name] == pytest.approx(value, rel=1e-9), name
    # the paper's SVD term is sigma_1 / sum sigma exactly
    if preset == "paper":
        sigma = np.linalg.svd(z.detach().numpy(), compute_uv=False)
        assert terms["dominant_sv"] == pytest.approx(sigma[0] / sigma.sum(), rel=1e-9)


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


@pytest.mark.parametrize("preset", nm.PRESETS)
def test_heads_learn_and_are_deterministic(preset):
    x, y = _blobs()
    for method in nm.HEAD_METHODS:
        config = nm.default_head_config(method, seed=0, preset=preset)
        a = nm.train_head(x, y, 3, config)
        b = nm.train_head(x, y, 3, config)
        assert a.method == method and _params_equal(a.module, b.module)
        assert a.accuracy(x, y) > 0.95
        assert a.history["ce"][-1] < a.history["ce"][0]
    with pytest.raises(TypeError, match="LinearProbeConfig"):
        nm.train_head(x, y, 3, nm.NMTuneConfig(epochs=1), method="linear")


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


# ---------------------------------------------------------------------------- intervals and claims


def _grid(effects, seeds=(0, 1, 2), rates=(0.0, 0.05, 0.1, 0.2, 0.3), noise=0.1, seed=0):
    """A synthetic preset_grid: accuracy = base(head, domain) + effect(rate, domain) + seed term."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    base = {"linear probe": 0.70, "MLP": 0.75, "NMTune": 0.77}
    for preset in nm.PRESETS:
        for s in seeds:
            seed_term = rng.normal(scale=0.02)
            for rate in rates:
                for head, b in base.items():
                    for domain in ("ID", "OOD"):
                        acc = b + effects.get((domain, rate), 0.0) + seed_term + rng.normal(scale=noise / 100)
                        rows.append({"preset": preset, "head": head, "noise_rate": rate, "seed": s,
                                     "eval_set": domain, "domain": domain, "accuracy": acc})
    return pd.DataFrame(rows)


def _spectrum(rise, seeds=(0, 1, 2), rates=(0.0, 0.05, 0.1, 0.2, 0.3)):
    import pandas as pd

    return pd.DataFrame([{"noise_rate": r, "seed": s, "sve": 3.0 + rise * r + 0.001 * s,
                          "lsvr": 1.0 + rise * r - 0.001 * s} for s in seeds for r in rates])


def test_paired_by_seed_and_head_gap():
    import pandas as pd

    frame = pd.DataFrame({"noise_rate": [0.0, 0.0, 0.1, 0.1, 0.1], "seed": [0, 1, 0, 1, 2],
                          "accuracy": [0.5, 0.6, 0.55, 0.58, 0.9]})
    np.testing.assert_allclose(nm.paired_by_seed(frame, 0.1), [0.05, -0.02])  # seed 2 has no clean pair
    with pytest.raises(ValueError, match="one row per"):
        nm.paired_by_seed(pd.concat([frame, frame]), 0.1)
    heads = pd.DataFrame({"head": ["NMTune", "MLP"] * 4, "seed": [0, 0, 0, 0, 1, 1, 1, 1],
                          "noise_rate": [0.0, 0.0, 0.1, 0.1] * 2, "accuracy": [3, 1, 5, 1, 2, 2, 2, 4]})
    np.testing.assert_allclose(nm.head_gap_by_seed(heads, "NMTune", "MLP"), [3.0, -1.0])


def test_change_from_clean_is_a_paired_t_interval():
    import pandas as pd
    from scipy import stats

    frame = pd.DataFrame({"noise_rate": [0.0] * 3 + [0.1] * 3, "seed": [0, 1, 2] * 2,
                          "accuracy": [0.5, 0.6, 0.7, 0.52, 0.63, 0.71]})
    out = nm.change_from_clean(frame, scale=100.0).set_index("noise_rate")
    diffs = np.array([2.0, 3.0, 1.0])
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3)
    assert out.loc[0.1, "change"] == pytest.approx(2.0)
    assert out.loc[0.1, "low"] == pytest.approx(2.0 - half) and out.loc[0.1, "high"] == pytest.approx(2.0 + half)
    assert out.loc[0.0, "change"] == 0.0 and np.isnan(out.loc[0.0, "low"])
    summary = nm.summarise_over_seeds(frame.assign(head="h", eval_set="ID"))
    assert summary["n_seeds"].tolist() == [3, 3] and summary["ci"].notna().all()


def test_claims_verdicts_levels_and_paper_numbers():
    # a clear ID gain at 5% but none at 10%, an OOD loss at every ratio, spectra rising
    effects = {("ID", 0.05): 0.03, ("OOD", 0.05): -0.03, ("OOD", 0.1): -0.04, ("OOD", 0.2): -0.05,
               ("OOD", 0.3): -0.06}
    rows = nm.claims(_grid(effects), _spectrum(1.0), _spectrum(1.0))
    by_text = {c.claim: c for c in rows}
    five = by_text["Slight pre-training noise improves ID transfer (linear probe): 5% noise"]
    ten = by_text["Slight pre-training noise improves ID transfer (linear probe): 10% noise"]
    # both comparisons reported, each at the Bonferroni level for two; never the better one alone
    assert five.level == pytest.approx(0.975) and ten.level == pytest.approx(0.975)
    assert five.verdict == "holds" and ten.verdict == "not resolved"
    assert five.estimate == pytest.approx(3.0, abs=0.1) and five.unit == "points"
    assert five.resolvable == pytest.approx((five.high - five.low) / 2)
    assert five.paper == pytest.approx(74.12 - 73.54, abs=0.005) and "Figure 2(a)" in five.paper_source
    ood = [c for c in rows if c.claim.startswith("Any pre-training noise hurts OOD")]
    assert len(ood) == 4 and all(c.level == pytest.approx(1 - 0.05 / 4) for c in ood)
    assert all(c.verdict == "holds" and c.direction == "decrease" for c in ood)
    sve = nm.find_claim(rows, "Pre-training noise raises the singular value entropy")
    assert sve.verdict == "holds" and sve.estimate == pytest.approx(0.3) and sve.paper == pytest.approx(0.04)
    heads = [c for c in rows if c.claim.startswith("NMTune beats")]
    assert len(heads) == 8 and all(c.level == pytest.approx(0.975) for c in heads)
    assert all(c.verdict == "holds" for c in heads)  # NMTune is 7 points above the probe in the synthetic grid
    mlp_id = nm.find_claim(rows, "NMTune beats the plain MLP head (ID); preset 'paper'")
    assert mlp_id.paper == pytest.approx(((75.06 - 73.96) + (74.87 - 73.97) + (74.27 - 73.13)) / 3, abs=0.005)
    assert nm.claim_summary(rows)["total"] == len(rows) == 16
    assert nm.claim_sentence(five).startswith("holds (+") and nm.claim_sentence(five).endswith(", 97.5% interval)")
    assert "98.75% interval (4 comparisons)" in ood[0].comparison
    # the opposite effect is contradicted, and one seed resolves nothing
    flipped = nm.claims(_grid({("ID", 0.05): -0.03, ("ID", 0.1): -0.03}), _spectrum(-1.0), _spectrum(-1.0))
    assert nm.find_claim(flipped, "Slight pre-training noise improves ID transfer (linear probe): 5%").verdict == "contradicted"
    assert nm.find_claim(flipped, "Pre-training noise raises the largest").verdict == "contradicted"
    one = nm.claims(_grid(effects, seeds=(0,)), _spectrum(1.0, seeds=(0,)), _spectrum(1.0, seeds=(0,)))
    assert all(c.verdict == "not resolved" and c.resolvable is None for c in one)
    # a smoke-sized run (noise 0, 10, 30%) tests only what it has, corrected for what it has
    small = nm.claims(_grid(effects, rates=(0.0, 0.1, 0.3)), _spectrum(1.0, rates=(0.0, 0.1, 0.3)),
                      _spectrum(1.0, rates=(0.0, 0.1, 0.3)))
    assert [c.level for c in small if "improves ID" in c.claim] == [pytest.approx(0.95)]
    with pytest.raises(ValueError, match="clean encoders"):
        nm.claims(_grid(effects, rates=(0.1, 0.3)), _spectrum(1.0), _spectrum(1.0))


def test_preset_comparison_and_paper_curves():
    table = nm.preset_comparison(_grid({("ID", 0.05): 0.03}))
    assert list(table.columns) == ["quantity", "paper", "paper: interval", "official code", "official code: interval"]
    row = table[table.quantity == "linear probe, ID: 5% noise minus clean (points)"].iloc[0]
    assert row["paper"] == pytest.approx(3.0, abs=0.1) and row["paper: interval"].startswith("[+")
    curves = nm.our_vs_paper_changes(_grid({}))
    assert set(curves.source) == {"ours", "paper: ResNet-50, IN-1K", "paper: CLIP, YFCC15M"}
    paper_id = curves[(curves.source == "paper: ResNet-50, IN-1K") & (curves.domain == "ID")]
    np.testing.assert_allclose(paper_id["change"], [0.0, 0.58, -0.31, -0.93, -2.11], atol=1e-9)


def test_paper_numbers_carry_their_source():
    frame = nm.paper_numbers()
    assert {"quantity", "backbone", "head", "noise_rate", "value", "unit", "source"} <= set(frame.columns)
    assert frame["source"].str.len().min() > 0 and not frame["value"].isna().any()
    assert nm.paper_value("pre-training accuracy", nm.RESNET, "", 0.3) == 73.11  # Table 3
    assert nm.paper_value("ID accuracy", nm.CLIP, "NMTune", 0.05) == 67.44  # Table 16
    with pytest.raises(KeyError, match="reports no"):
        nm.paper_value("ID accuracy", nm.RESNET, "NMTune", 0.3)  # Table 16 stops at 10%
    # Figure 5 F1: NMTune above MLP above the linear probe at every ratio, on both backbones
    for quantity in ("ID F1", "OOD F1"):
        for backbone in (nm.RESNET, nm.CLIP):
            assert nm.paper_gap(quantity, backbone, "NMTune", "MLP") > 0
            assert nm.paper_gap(quantity, backbone, "MLP", "linear probe") > 0


def test_rank_correlation_interval():
    x = np.arange(12.0)
    perfect = nm.rank_correlation(x, 2 * x + 1)
    assert perfect.estimate == pytest.approx(1.0) and perfect.low == pytest.approx(1.0)
    noisy = nm.rank_correlation(x, np.random.default_rng(0).normal(size=12))
    assert noisy.low < 0 < noisy.high
    assert np.isnan(nm.rank_correlation([1.0, 2.0], [2.0, 1.0]).estimate)


def test_head_cache_key_ignores_analysis_code():
    # the head-training code is hashed by source; the claims code is not part of it
    assert "def claims" not in "".join(__import__("inspect").getsource(getattr(nm, n)) for n in nm._HEAD_CODE)
    assert len(nm.head_code_version()) == 12


# ---------------------------------------------------------------------------- full profile: from scratch


def test_scratch_backbone_pretrains_from_random_init(tmp_path, monkeypatch):
    """``scratch:<folder>``: the architecture of a local transformers config, randomly initialised
    (seeded), then pre-trained on the noisy labels through the same cached path as the full profile."""
    from transformers import ResNetConfig

    from fmbook.core.vision import EncoderConfig

    monkeypatch.setenv("FMBOOK_CACHE", str(tmp_path / "cache"))
    arch = tmp_path / "tiny-resnet-hf"
    ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                 downsample_in_first_stage=False).save_pretrained(arch)
    first = nm.random_init_folder(str(arch), seed=0)
    assert first == nm.random_init_folder(str(arch), seed=0) and first != nm.random_init_folder(str(arch), seed=1)
    assert (first / "config.json").is_file()
    setup = nm.PretrainSetup(pretrain_per_class=4, eval_per_class=2)
    config = EncoderConfig(backbone=f"scratch:{arch}", epochs=1, batch_size=8, lr=0.01)
    encoder = nm.pretrain_noisy_encoder(0.2, 0, setup, config)
    assert encoder.trained.feature_dim == 16 and not encoder.trained.from_cache
    assert encoder.trained.config.backbone == str(first)
    name, info = nm.encoder_description(config, setup)
    assert "from scratch" in name and info["starts_from"] == "random initialisation"
    assert nm.encoder_description(EncoderConfig(backbone="microsoft/resnet-18"), setup)[1]["starts_from"] == "pretrained weights"
    with pytest.raises(ValueError, match="scratch:<hub id>"):
        nm.random_init_folder("", seed=0)
