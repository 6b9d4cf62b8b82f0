"""fmbook.imbalance: long-tailed sets, the stage-1 losses against hand computations, the decoder and
stage-2 heads, the schedule, the metrics, the cached runs, the hub CLIP token path, and the claims.

Random tokens and a randomly initialised tiny CLIP are used here only (unit tests)."""

from __future__ import annotations

import math
import string

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from fmbook import imbalance
from fmbook.core import vision, vlm
from fmbook.core.claims import CONTRADICTED, HOLDS, NOT_RESOLVED
from fmbook.core.datasets import ImageSet
from fmbook.imbalance import analysis, features, losses as L, models as M, train as T
from fmbook.imbalance.data import ImbalanceError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FMBOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --------------------------------------------------------------------------- long-tailed sets

def test_exponential_profile_and_bad_ratios():
    assert imbalance.exponential_counts(100, 100, 3).tolist() == [100, 10, 1]
    assert imbalance.exponential_counts(1280, 1, 4).tolist() == [1280] * 4
    c = imbalance.exponential_counts(1280, 10, 10)
    assert c[0] == 1280 and c[-1] == 128 and np.all(np.diff(c) < 0)
    for bad in (0.5, 0, -3, "ten", float("nan")):
        with pytest.raises(ImbalanceError, match="imbalance ratio"):
            imbalance.exponential_counts(100, bad, 3)


def test_thresholds_are_the_papers_scaled_to_the_largest_class():
    t = imbalance.ShotThresholds.scaled(1280)
    assert (t.many_above, t.few_below) == (100, 20)
    assert imbalance.ShotThresholds.scaled(640).many_above == 50
    assert t.groups([101, 100, 20, 19]).tolist() == ["many", "medium", "medium", "few"]


def test_long_tailed_sets_are_seeded_nested_and_follow_the_profile():
    labels = np.repeat(np.arange(5), 300)
    a = imbalance.long_tailed_splits(labels, 5, [100, 10, 50], n_max=200, seed=3)
    b = imbalance.long_tailed_splits(labels, 5, [10, 50, 100], n_max=200, seed=3)
    assert list(a) == [10.0, 50.0, 100.0]
    for r in a:
        assert np.array_equal(a[r].indices, b[r].indices)
        assert np.array_equal(np.bincount(labels[a[r].indices], minlength=5), a[r].counts)
        assert sorted(a[r].counts.tolist(), reverse=True) == imbalance.exponential_counts(200, r, 5).tolist()
    assert set(a[100.0].indices) <= set(a[50.0].indices) <= set(a[10.0].indices)
    other = imbalance.long_tailed_splits(labels, 5, [10], n_max=200, seed=4)[10.0]
    assert not np.array_equal(other.indices, a[10.0].indices)
    with pytest.raises(ImbalanceError, match="n_max"):
        imbalance.long_tailed_splits(labels, 5, [10], n_max=400, seed=0)
    with pytest.raises(ImbalanceError, match="imbalance ratio"):
        imbalance.long_tailed_splits(labels, 5, [0.9], n_max=100, seed=0)


# --------------------------------------------------------------------------- losses against hand computations

Z = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0]])
Y = torch.tensor([0, 2, 1])
COUNTS = [100, 30, 5]


def _ce(z, y):
    return float(np.mean([-(z[i][y[i]] - math.log(sum(math.exp(v) for v in z[i]))) for i in range(len(y))]))


def test_balanced_softmax_is_cross_entropy_on_logits_plus_log_prior():
    prior = np.array(COUNTS) / sum(COUNTS)
    shifted = Z.numpy() + np.log(prior)
    assert float(L.balanced_softmax_loss(Z, Y, COUNTS)) == pytest.approx(_ce(shifted.tolist(), Y.tolist()), rel=1e-6)
    assert float(L.make_loss("balanced_softmax", COUNTS)(Z, Y)) == pytest.approx(_ce(shifted.tolist(), Y.tolist()), rel=1e-6)


def test_ldam_margins_scale_as_n_to_minus_a_quarter_with_the_configured_maximum():
    m = L.ldam_margins(COUNTS, max_margin=0.5).numpy()
    assert m.max() == pytest.approx(0.5) and m.argmax() == 2
    assert m[0] / m[1] == pytest.approx((100 / 30) ** -0.25, rel=1e-6)
    assert m[0] == pytest.approx(0.5 * (5 / 100) ** 0.25, rel=1e-6)
    # the loss: cross-entropy with the target logit lowered by its class margin
    z = Z.numpy().copy()
    for i, y in enumerate(Y.tolist()):
        z[i, y] -= m[y]
    assert float(L.ldam_loss(Z, Y, COUNTS, 0.5)) == pytest.approx(_ce(z.tolist(), Y.tolist()), rel=1e-6)
    assert float(L.ldam_loss(Z, Y, COUNTS, 0.5, scale=2.0)) == pytest.approx(_ce((2 * z).tolist(), Y.tolist()), rel=1e-6)


def test_class_balanced_weights_are_n_over_c_n_c():
    w = L.class_balanced_weights(COUNTS).numpy()
    assert w == pytest.approx([135 / 300, 135 / 90, 135 / 15], rel=1e-6)
    assert L.class_balanced_weights([7, 7, 7]).numpy() == pytest.approx([1, 1, 1])
    weighted = sum(w[y] * -F.log_softmax(Z[i], 0)[y].item() for i, y in enumerate(Y.tolist())) / sum(w[y] for y in Y.tolist())
    assert float(L.make_loss("cbw", COUNTS)(Z, Y)) == pytest.approx(weighted, rel=1e-6)


def test_grw_weights_follow_the_exponent_and_sum_to_the_number_of_classes():
    w = L.grw_weights(COUNTS, 1.2).numpy()
    assert w.sum() == pytest.approx(3.0, rel=1e-6)
    assert w[2] / w[0] == pytest.approx((5 / 100) ** -1.2, rel=1e-5)
    assert L.grw_weights(COUNTS, 1.0).numpy()[1] / L.grw_weights(COUNTS, 1.0).numpy()[0] == pytest.approx(100 / 30, rel=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy_and_gamma_two_matches_by_hand():
    assert float(L.focal_loss(Z, Y, 0.0)) == pytest.approx(float(F.cross_entropy(Z, Y)), rel=1e-6)
    p = F.softmax(Z, 1)[torch.arange(3), Y].numpy()
    assert float(L.focal_loss(Z, Y, 2.0)) == pytest.approx(float(np.mean(-(1 - p) ** 2 * np.log(p))), rel=1e-5)
    assert L.LossConfig().focal_gamma == 2.0


def test_lade_is_balanced_softmax_plus_the_weighted_lade_term():
    assert float(L.lade_loss(Z, Y, COUNTS, weight=0.0)) == pytest.approx(float(L.balanced_softmax_loss(Z, Y, COUNTS)), rel=1e-6)
    # the LADE term by hand (B = 3, C = 3)
    prior = np.array(COUNTS) / sum(COUNTS)
    z = Z.numpy()
    onehot = np.eye(3)[Y.numpy()]
    first = (z * onehot).sum(0) / onehot.sum(0)
    spread = z - np.log(prior + 1e-9) + np.log(1 / 3 + 1e-9)
    second = np.log(np.exp(spread).sum(0)) - np.log(3)
    term = -np.sum((first - second - 0.1 * second ** 2) * prior)
    assert float(L.lade_loss(Z, Y, COUNTS, 0.1, 0.1)) == pytest.approx(float(L.balanced_softmax_loss(Z, Y, COUNTS)) + 0.1 * term, rel=1e-5)


def test_every_loss_is_finite_and_differentiable_and_unknown_names_are_refused():
    for name in L.LOSSES:
        z = Z.clone().requires_grad_(True)
        loss = L.make_loss(name, COUNTS)(z, Y)
        loss.backward()
        assert torch.isfinite(loss) and z.grad is not None and torch.isfinite(z.grad).all()
    with pytest.raises(ImbalanceError, match="allowed: ce, cbs"):
        L.make_loss("softmax", COUNTS)
    with pytest.raises(ImbalanceError, match="allowed: crt, lws, disalign, marc"):
        M.make_head("tau_norm", torch.nn.Linear(4, 3))
    with pytest.raises(ImbalanceError, match="allowed: zero_shot"):
        T.check_method("mixup")
    with pytest.raises(ImbalanceError, match="positive"):
        L.make_loss("ce", [3, 0, 2])


# --------------------------------------------------------------------------- decoder and heads

def test_decoder_shapes_and_depth_zero_is_a_linear_probe_on_token_zero():
    torch.manual_seed(0)
    tokens = torch.randn(5, 7, 16)
    dec = M.DecoderClassifier(16, 3, M.DecoderConfig(depth=3, num_heads=4, mlp_ratio=0.5))
    assert dec(tokens).shape == (5, 3) and len(dec.blocks) == 3
    assert dec.blocks[0].mlp[0].out_features == 8  # MLP ratio 0.5
    probe = M.DecoderClassifier(16, 3, M.DecoderConfig(depth=0))
    assert torch.allclose(probe(tokens), probe.classifier(tokens[:, 0]))
    # token 0 attends to the others: changing another token changes the decoder's output
    changed = tokens.clone()
    changed[:, 3] += 1.0
    assert not torch.allclose(dec(tokens), dec(changed))
    with pytest.raises(ImbalanceError, match="divisible"):
        M.DecoderClassifier(10, 3, M.DecoderConfig(num_heads=4))


def test_block_is_a_pre_norm_residual_transformer_block():
    torch.manual_seed(1)
    blk = M.Block(8, 2, 0.5)
    x = torch.randn(2, 4, 8)
    h = blk.norm1(x)
    mid = x + blk.attn(h, h, h)[0]
    assert torch.allclose(blk(x), mid + blk.mlp(blk.norm2(mid)), atol=1e-6)


def test_stage_two_heads_start_from_the_stage_one_logits_and_follow_their_formulas():
    torch.manual_seed(2)
    fc = torch.nn.Linear(6, 4)
    f = torch.randn(3, 6)
    z = fc(f)
    assert torch.allclose(M.make_head("lws", fc)(f, z), z)
    assert torch.allclose(M.make_head("marc", fc)(f, z), z)
    marc = M.make_head("marc", fc)
    with torch.no_grad():
        marc.a.fill_(2.0)
        marc.b.fill_(0.5)
    assert torch.allclose(marc(f, z), 2 * z + 0.5 * fc.weight.norm(dim=1))
    dis = M.make_head("disalign", fc)
    c = torch.sigmoid(dis.confidence(f))
    with torch.no_grad():
        dis.beta.fill_(1.0)
    assert torch.allclose(dis(f, z), (1 + c) * z + c)
    crt = M.make_head("crt", fc)
    assert crt(f, z).shape == (3, 4) and not torch.allclose(crt(f, z), z)
    assert M.HEAD_TRAINING == {"crt": "cbs", "lws": "cbs", "disalign": "grw", "marc": "grw"}


# --------------------------------------------------------------------------- schedule, sampling, metrics

def test_schedule_is_linear_warmup_then_the_usb_cosine():
    cfg = T.TrainConfig(iterations=100, warmup=10)
    assert T.lr_factor(0, cfg) == 0 and T.lr_factor(5, cfg) == pytest.approx(0.5)
    assert T.lr_factor(10, cfg) == pytest.approx(1.0)
    assert T.lr_factor(100, cfg) == pytest.approx(math.cos(7 * math.pi / 16))
    d = T.TrainConfig()
    assert (d.lr, d.momentum, d.weight_decay, d.batch_size, d.iterations, d.warmup, d.grad_clip) == \
        (0.03, 0.9, 5e-4, 256, 8192, 512, 1.0)
    with pytest.raises(ImbalanceError):
        T.TrainConfig(iterations=10, warmup=10)


def test_class_balanced_sampling_draws_classes_equally():
    labels = np.repeat([0, 1, 2], [900, 90, 10])
    gen = torch.Generator().manual_seed(0)
    drawn = torch.cat(list(T._batches(labels, T.TrainConfig(iterations=40, warmup=0, batch_size=300), True, gen)))
    share = np.bincount(labels[drawn.numpy()], minlength=3) / len(drawn)
    assert np.allclose(share, 1 / 3, atol=0.02)
    plain = torch.cat(list(T._batches(labels, T.TrainConfig(iterations=10, warmup=0, batch_size=100), False, gen)))
    assert sorted(plain.tolist()) == list(range(1000))  # one epoch: every image once


def test_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 0])
    m = T.evaluate(pred, labels, ["many", "medium", "few"])
    assert m["overall"] == pytest.approx(3 / 6)
    assert (m["many"], m["medium"], m["few"]) == (0.5, 1.0, 0.0)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    # F1 per class: class 0: p=1/3, r=1/2 -> 0.4; class 1: p=2/3, r=1 -> 0.8; class 2: 0
    assert m["macro_f1"] == pytest.approx((0.4 + 0.8 + 0) / 3)
    assert math.isnan(T.evaluate(pred, labels, ["many", "many", "medium"])["few"])


# --------------------------------------------------------------------------- training and caching

def _separable(n_per_class, seed, counts=None):
    rng = np.random.default_rng(seed)
    counts = counts or [n_per_class] * 3
    labels = np.repeat(np.arange(3), counts)
    centres = rng.normal(size=(3, 8)) * 4
    tokens = rng.normal(size=(len(labels), 5, 8)) * 0.3
    tokens[:, 2] += centres[labels]  # the class lives in a spatial token, not in token 0
    return tokens.astype(np.float16), labels


def test_decoder_learns_from_spatial_tokens_deterministically_and_the_cache_reloads(cache):
    tokens, labels = _separable(None, 0, [120, 40, 10])
    test_tokens, test_labels = _separable(None, 0, [50, 50, 50])
    cfg = T.TrainConfig(lr=0.3, iterations=60, warmup=5, batch_size=64)
    dec = M.DecoderConfig(depth=1, num_heads=2)
    model, history = T.train_stage1(tokens, labels, [120, 40, 10], "balanced_softmax", dec, cfg, seed=0)
    acc = (T.predict_decoder(model, test_tokens) == test_labels).mean()
    assert acc > 0.7 and history[-1] < history[0]  # chance: 1/3
    again, _ = T.train_stage1(tokens, labels, [120, 40, 10], "balanced_softmax", dec, cfg, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    first, meta, pred = T.cached_stage1({"t": 1}, tokens, labels, [120, 40, 10], "ce", dec, cfg, 0, test_tokens=test_tokens)
    second, meta2, pred2 = T.cached_stage1({"t": 1}, tokens, labels, [120, 40, 10], "ce", dec, cfg, 0, test_tokens=test_tokens)
    assert not meta["from_cache"] and meta2["from_cache"]
    assert np.array_equal(pred, pred2) and np.array_equal(pred, T.predict_decoder(second, test_tokens))
    f, z = T.decoder_outputs(first, tokens)
    for head in M.HEADS:
        module, _ = T.train_stage2(first, f, z, labels, [120, 40, 10], head, cfg, 0)
        assert (T.predict_head(first, module, test_tokens) == test_labels).mean() > 0.6


def test_token_zero_of_the_tiny_resnet_tokens_is_the_encoders_feature():
    torch.manual_seed(0)
    enc = vision.TinyResNet(4).eval()
    x = torch.rand(3, 1, 28, 28)
    tok = features.tiny_resnet_tokens(enc, x)
    assert tok.shape == (3, 1 + 16, 16)
    assert torch.allclose(tok[:, 0], enc(x), atol=1e-6)
    with pytest.raises(ImbalanceError):
        features.tiny_resnet_tokens(torch.nn.Linear(2, 2), x)


def _tiny_clip_folder(folder):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + ".,-'/ ":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=CLIPTokenizer(vocab=vocab, merges=[]))
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_full_path_a_hub_clip_gives_all_its_tokens_and_the_experiment_runs(tmp_path, cache):
    model = vlm.load_vlm(str(_tiny_clip_folder(tmp_path / "tiny-clip")))
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    images = rng.integers(0, 255, (len(labels), 32, 32, 3), dtype=np.uint8)
    pool = ImageSet("random-rgb", images, labels, ("apple", "bear", "cloud", "dolphin"))
    tok = features.extract_tokens(model, images[:3])
    assert tok.shape == (3, 1 + 16, 32)  # class token + 4x4 patches, width 32
    with torch.no_grad():
        pixels = model.processor(images=list(images[:3]), return_tensors="pt")["pixel_values"]
        direct = model.model.vision_model(pixel_values=pixels).last_hidden_state.numpy()
    assert np.allclose(tok.astype(np.float32), direct, atol=2e-2)
    test = pool.take(np.arange(0, 120, 3), "test")
    setup = imbalance.prepare(model, pool, test, ratios=[1, 4], seeds=[0], n_max=20)
    assert setup.token_shape == (17, 32) and not setup.from_cache["train_tokens"]
    config = imbalance.MethodConfig(decoder=M.DecoderConfig(1, 4, 0.5), train=T.TrainConfig(iterations=4, warmup=1, batch_size=16),
                                    stage2=T.TrainConfig(iterations=3, warmup=1, batch_size=16),
                                    zero_shot_templates=vlm.TRAIN_TEMPLATES[:1])
    rows = imbalance.run_methods(setup, ["zero_shot", "linear_probe", "ce", "ldam", "marc"], config)
    assert len(rows) == 2 * 5 and set(imbalance.METRICS) <= set(rows.columns)
    assert imbalance.prepare(model, pool, test, ratios=[1, 4], seeds=[0], n_max=20).from_cache["train_tokens"]


# --------------------------------------------------------------------------- claims

def _rows(effects: dict, ratios=(10, 100), seeds=(0, 1, 2), noise=0.002):
    rng = np.random.default_rng(0)
    out = []
    for r in ratios:
        for s in seeds:
            for method, (overall, few) in effects(r).items():
                out.append({"dataset": f"ρ={r}", "ratio": float(r), "seed": s, "method": method,
                            "overall": overall + rng.normal() * noise,
                            "few": np.nan if r < 50 else few + rng.normal() * noise,
                            "many": 0.9, "medium": np.nan, "balanced_accuracy": overall, "macro_f1": overall})
    return pd.DataFrame(out)


def test_claims_hold_contradict_or_stay_unresolved_from_the_intervals():
    def reversal(r):
        base = {"zero_shot": (0.60, 0.50), "ce": (0.80, 0.20)}
        base.update({m: (0.80, 0.40) for m in analysis.IMBALANCE_AWARE})
        base["balanced_softmax"] = (0.78, 0.40) if r == 10 else (0.83, 0.40)
        return base
    rows = analysis.claims(_rows(reversal))
    assert [c.verdict for c in rows] == [HOLDS, HOLDS, HOLDS, HOLDS]
    assert "ρ=100" in rows[2].claim and rows[0].estimate == pytest.approx(20.0, abs=0.5)
    assert rows[3].estimate == pytest.approx(2.0, abs=0.5)

    def same_order(r):
        base = reversal(r)
        base["balanced_softmax"] = (0.85, 0.40)
        base["zero_shot"] = (0.95, 0.5)
        base.update({m: (0.80, 0.10) for m in analysis.IMBALANCE_AWARE if m != "balanced_softmax"})
        base["balanced_softmax"] = (0.85, 0.10)
        return base
    rows = analysis.claims(_rows(same_order))
    assert [c.verdict for c in rows] == [CONTRADICTED, CONTRADICTED, CONTRADICTED, CONTRADICTED]
    noisy = analysis.claims(_rows(reversal, noise=0.2))
    assert NOT_RESOLVED in [c.verdict for c in noisy]
    table = analysis.summarise(_rows(reversal))
    assert {"overall", "overall_pm", "few_pm"} <= set(table.columns) and table["seeds"].eq(3).all()
    assert table.loc[table["ratio"] == 10, "few"].isna().all()


def test_bad_names_in_the_experiment_are_refused_and_the_figures_draw():
    from fmbook.imbalance import experiment, plots

    with pytest.raises(ImbalanceError, match="allowed: train, heldout, name"):
        experiment.templates("imagenet80")
    with pytest.raises(ImbalanceError, match="allowed"):
        experiment.method_config(zero_shot="none")
    rows = _rows(lambda r: {"zero_shot": (0.6, 0.5), "ce": (0.8, 0.2), "balanced_softmax": (0.82, 0.4)})
    rows["label"] = rows["method"].map(T.METHOD_LABELS)
    summary = analysis.summarise(rows)
    table = plots.interval_table(summary, T.METRICS, ["zero_shot", "ce", "balanced_softmax"])
    assert list(table.columns[:2]) == ["data", "method"] and len(table) == 6
    assert table["few"].isna().sum() == 3 and "±" in table["overall"].iloc[0]
    fig = plots.heatmap(summary, T.METRICS, ["zero_shot", "ce", "balanced_softmax"], "t")
    fig2 = plots.bars_with_intervals(summary, "overall", ["zero_shot", "ce"], "t", "y")
    counts = pd.DataFrame([{"dataset": "ρ=10", "ratio": 10.0, "seed": 0, "class": str(c), "rank": c,
                            "count": 100 // (c + 1), "group": "many" if c < 2 else "few"} for c in range(4)])
    fig3 = plots.counts_figure(counts, 0, 40, 30)
    import matplotlib.pyplot as plt
    for f in (fig, fig2, fig3):
        assert f.get_size_inches()[0] <= 10
        plt.close(f)
