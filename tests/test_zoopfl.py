"""ZooPFL: the black box, the zeroth-order estimators, surgery, one client's round, claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from fmbook.zoopfl import blackbox as bb
from fmbook.zoopfl import method, surgery, zo
from fmbook.zoopfl.blackbox import QueryBudgetExceeded, ZooPFLError


# --------------------------------------------------------------------------- black box

def _tiny_box(budget=None):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    return bb.module_blackbox(net, (4,), 3, "tiny", budget=budget), net


def test_black_box_counts_every_example_and_blocks_gradients():
    box, net = _tiny_box()
    x = torch.randn(5, 4, requires_grad=True)
    out = box.query_tensor(x)
    assert not out.requires_grad and out.grad_fn is None
    assert isinstance(box.query(np.zeros((2, 4), np.float32)), np.ndarray)
    assert box.queries == 7 and box.counts == {"train": 7}
    with box.phase("eval"):
        box.query(np.zeros((3, 4), np.float32))
    assert box.queries == 7 and box.counts["eval"] == 3
    with pytest.raises(RuntimeError):  # no path back into the model
        out.sum().backward()
    assert not hasattr(box, "parameters") and not hasattr(box, "state_dict")
    assert not hasattr(box, "__dict__")  # __slots__: nothing else can be attached or found
    np.testing.assert_allclose(out.numpy(), net(x).detach().numpy(), atol=1e-6)


def test_black_box_budget_refuses_before_running_and_checks_shapes():
    box, _ = _tiny_box(budget=5)
    box.query(np.zeros((4, 4), np.float32))
    with pytest.raises(QueryBudgetExceeded, match="budget of 5"):
        box.query(np.zeros((2, 4), np.float32))
    assert box.queries == 4 and box.remaining == 1
    with pytest.raises(ZooPFLError, match="shape"):
        box.query(np.zeros((2, 5), np.float32))
    with pytest.raises(ZooPFLError, match="budget"):
        box.set_budget(0)


# --------------------------------------------------------------------------- estimators

def _quadratic(dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    a = m @ m.T / dim + torch.eye(dim, dtype=torch.float64)
    b = torch.randn(dim, generator=g, dtype=torch.float64)

    def f(points):  # (M, d) -> (M,) ; or (M, B, d) -> (M, B)
        return 0.5 * torch.einsum("...i,ij,...j->...", points, a, points) + points @ b

    z = torch.randn(dim, generator=g, dtype=torch.float64)
    return f, z, a @ z + b


@pytest.mark.parametrize("distribution", ["sphere", "gaussian"])
def test_random_direction_estimator_is_unbiased_on_a_quadratic(distribution):
    """Mean of 20,000 one-direction estimates within 4 standard errors of the true gradient."""
    f, z, truth = _quadratic()
    gen = torch.Generator().manual_seed(1)
    n = 20000
    zb = z.expand(n, -1).clone()  # n independent estimates in one batched call
    fb = lambda points: f(points)  # noqa: E731  (M, n, d) -> (M, n)
    draws = zo.random_direction_gradient(fb, zb, q=1, mu=0.5, distribution=distribution, generator=gen)
    mean, se = draws.mean(0), draws.std(0) / np.sqrt(n)
    assert torch.all((mean - truth).abs() < 4 * se + 1e-9), (mean, truth, se)
    # mu is large on purpose: a quadratic's second-order term cancels in expectation


def test_coordinate_estimator_is_exact_on_a_quadratic_and_costs_2d():
    f, z, truth = _quadratic(dim=5)
    _, _, truth2 = _quadratic(dim=5)
    calls = []

    def counted(points):
        calls.append(points.shape[0])
        return f(points)

    g = zo.coordinate_gradient(counted, z, mu=0.3)
    torch.testing.assert_close(g, truth, rtol=1e-9, atol=1e-9)
    assert sum(calls) == 2 * 5 == zo.queries_per_estimate("coordinate", 5)
    batch = torch.stack([z, 2 * z])
    gb = zo.coordinate_gradient(lambda p: f(p), batch, mu=0.3)  # (B, d): one exact gradient per row
    assert gb.shape == (2, 5)
    torch.testing.assert_close(gb[0], truth, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gb[1] - gb[0], gb[0] - zo.coordinate_gradient(f, 0 * z, mu=0.3), rtol=1e-9, atol=1e-9)


def test_error_falls_with_q_against_autograd_on_a_white_box_twin():
    """A smooth non-quadratic loss through a small network: relative error of the sphere estimate
    against the autograd gradient of the same network falls as q grows (averaged over 200 draws)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    y = torch.tensor([1])

    def loss_of(points):  # (M, 1, 8) -> (M, 1)
        out = net(points.reshape(-1, 8))
        return nn.functional.cross_entropy(out, y.repeat(len(out)), reduction="none").reshape(points.shape[:2])

    z = torch.randn(1, 8, dtype=torch.float64, requires_grad=True)
    loss_of(z[None]).sum().backward()
    truth = z.grad.detach()
    errors = {}
    for q in (1, 4, 16, 64):
        gen = torch.Generator().manual_seed(q)
        zb = z.detach().expand(200, -1).clone()
        est = zo.random_direction_gradient(lambda p: loss_of(p.reshape(p.shape[0], -1, 8).reshape(-1, 1, 8)).reshape(p.shape[0], -1),
                                           zb, q=q, mu=1e-4, generator=gen)
        errors[q] = float(zo.relative_error(est, truth.expand(200, -1)).mean())
    assert errors[1] > errors[4] > errors[16] > errors[64]
    assert errors[64] < 0.5  # roughly sqrt(d / q)
    coord = zo.coordinate_gradient(lambda p: loss_of(p), z.detach(), mu=1e-5)
    assert float(zo.relative_error(coord, truth)) < 1e-6


def test_bad_mu_q_and_estimator_names_are_refused():
    f, z, _ = _quadratic()
    with pytest.raises(ZooPFLError, match="mu"):
        zo.random_direction_gradient(f, z, q=2, mu=0.0)
    with pytest.raises(ZooPFLError, match="mu"):
        zo.ZOConfig(mu=float("nan"))
    with pytest.raises(ZooPFLError, match="q"):
        zo.ZOConfig(q=0)
    with pytest.raises(ZooPFLError, match="q"):
        zo.random_direction_gradient(f, z, q=1.5, mu=0.1)
    with pytest.raises(ZooPFLError, match="allowed: sphere, gaussian, coordinate"):
        zo.ZOConfig(estimator="spsa")
    with pytest.raises(QueryBudgetExceeded, match="smaller than one"):
        zo.check_budget(10, "coordinate", dim=20)


# --------------------------------------------------------------------------- surgery and re-mapping

def test_surgery_shapes_embedding_and_remap_identity():
    ae = surgery.SurgeryAE((1, 28, 28), bottleneck=8, embed_dim=3, hidden=16)
    x = torch.rand(5, 1, 28, 28)
    e = surgery.ClientEmbedding(3)
    assert ae.latent(x, e()).shape == (5, 11) and ae.latent_dim == 11
    out = ae(x, e())
    assert out.shape == x.shape and float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1
    assert ae.decode(torch.zeros(4, 2, 11)).shape == (4, 2, 1, 28, 28)
    with pytest.raises(ZooPFLError, match="embedding"):
        ae.latent(x, None)
    remap = surgery.ReMap(10, 10)
    logits = torch.randn(4, 10)
    torch.testing.assert_close(remap(logits), logits)
    prompt = surgery.InputPrompt((1, 2, 2))
    assert prompt.apply_delta(torch.rand(3, 1, 2, 2), torch.zeros(5, 4)).shape == (5, 3, 1, 2, 2)


# --------------------------------------------------------------------------- one client's round

def _setup(method_name, budget=600, estimator="sphere"):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    box = bb.module_blackbox(net, (1, 4, 4), 3, "toy")
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    cfg = method.ZooPFLConfig(method=method_name, bottleneck=4, embed_dim=2, hidden=8, rounds=3, warmup_rounds=1,
                              query_budget=budget, batch_size=8, recon_epochs=2, remap_epochs=2, zo=zo.ZOConfig(estimator=estimator, q=3, mu=0.05))
    state = method.initial_state(cfg, (1, 4, 4), 3, 3, seed=0)
    return cfg, state, box, x, y


@pytest.mark.parametrize("name", method.METHODS)
def test_every_method_respects_the_budget_and_is_deterministic(name):
    cfg, state, box, x, y = _setup(name)
    results = []
    for _ in range(2):
        s = dict(state)
        for r in (1, 2, 3):
            s, metrics = method.fit_round(cfg, s, box, x, y, r, seed=0, client=0)
            assert int(s["counter.queries"][0]) <= cfg.query_budget
        results.append(s)
        ev = method.evaluate(cfg, s, box, x, y)
        assert 0 <= ev["accuracy"] <= 1 and ev["queries"] == s["counter.queries"][0]
    for k in results[0]:
        np.testing.assert_array_equal(results[0][k], results[1][k])
    used = int(results[0]["counter.queries"][0])
    if name == "zero_shot":
        assert used == 0
    elif name.startswith("remap"):
        assert used == len(x)  # one pass, cached on the client
    else:
        assert used > 0


def test_zo_round_uses_the_per_round_budget_exactly_and_trains_the_surgery():
    cfg, state, box, x, y = _setup("zoopfl", budget=640)
    s, m1 = method.fit_round(cfg, state, box, x, y, 1, 0, 0)  # warm-up: reconstruction only
    assert m1["queries"] == 0 and not np.array_equal(s["ae.decoder.0.weight"], state["ae.decoder.0.weight"])
    s2, m2 = method.fit_round(cfg, s, box, x, y, 2, 0, 0)
    steps, cost = method.steps_per_round(cfg, 6, 8)
    assert cost == 8 * (3 + 1) and m2["queries"] == steps * cost == 320
    assert not np.array_equal(s2["ae.encoder.1.weight"], s["ae.encoder.1.weight"])
    assert not np.array_equal(s2["embedding.vector"], s["embedding.vector"])


def test_budget_too_small_for_one_estimate_is_a_clear_error():
    cfg, state, box, x, y = _setup("zoopfl_no_ae", budget=50, estimator="coordinate")
    with pytest.raises(QueryBudgetExceeded, match="smaller than one coordinate estimate"):
        method.fit_round(cfg, state, box, x, y, 1, 0, 0)


def test_unknown_method_and_share_group_are_refused():
    with pytest.raises(ZooPFLError, match="allowed: zero_shot"):
        method.ZooPFLConfig(method="zoo")
    with pytest.raises(ZooPFLError, match="share group"):
        method.ZooPFLConfig(share=("everything",))


def test_share_patterns_keep_personal_parts_local():
    cfg = method.ZooPFLConfig()
    shared, local = method.share_patterns(cfg)
    assert "ae.encoder.*" in shared and "remap.*" in local and "embedding.*" in local and "counter.*" in local
    shared_f, _ = method.share_patterns(cfg.for_method("remap_fedavg"))
    assert "remap.*" in shared_f


# --------------------------------------------------------------------------- claims

def _final(gain_by_method: dict[str, float], seeds=(0, 1, 2), clients=4, noise=0.01):
    rng = np.random.default_rng(0)
    rows = []
    for s in seeds:
        for c in range(clients):
            base = 0.4 + 0.05 * c
            for m, g in gain_by_method.items():
                rows.append({"method": m, "seed": s, "client": c, "client_name": f"dom {c}",
                             "accuracy": base + g + noise * rng.standard_normal(), "queries": 100.0})
    return pd.DataFrame(rows)


def test_claims_three_way_verdicts_from_paired_intervals():
    from fmbook.zoopfl import analysis, claims

    final = _final({"zoopfl": 0.2, "zero_shot": 0.0, "zoopfl_no_ae": 0.2, "zoopfl_no_remap": 0.3})
    rows = claims(final)
    assert [r.verdict for r in rows] == ["holds", "not resolved", "contradicted"]
    assert all(r.unit == "points" and r.n == 12 and r.resolvable > 0 for r in rows)
    assert rows[0].level == pytest.approx(1 - 0.05 / 3)
    assert rows[0].estimate == pytest.approx(20, abs=1.5)
    gains = analysis.per_client_gains(final, "zoopfl", "zero_shot")
    assert list(gains["client"]) == [f"dom {c}" for c in range(4)] and (gains["n"] == 3).all()
    summary = analysis.method_summary(final)
    assert set(summary["method"]) == {"zoopfl", "zero_shot", "zoopfl_no_ae", "zoopfl_no_remap"}
    with pytest.raises(ZooPFLError, match="no results for method"):
        analysis.claims(final[final["method"] != "zoopfl_no_ae"])


# --------------------------------------------------------------------------- full-profile paths, tiny local models

def test_text_black_box_on_a_tiny_local_classifier(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from fmbook.zoopfl import text

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "very", "plot"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(words), hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=16, num_labels=2,
                                                     max_position_embeddings=32))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    box, embed = text.hub_text_blackbox(str(tmp_path), max_length=6)
    x = embed(["good movie", "very bad plot", "bad"])
    assert x.shape == (3, 6, 8) and np.all(x[2, 3:] == 0)  # padding rows are zero
    out = box.query(x)
    assert out.shape == (3, 2) and box.queries == 3
    cfg = method.ZooPFLConfig(bottleneck=4, embed_dim=2, hidden=8, rounds=2, warmup_rounds=1, query_budget=120,
                              batch_size=3, recon_epochs=1, surgery_output="linear", zo=zo.ZOConfig(q=2))
    state = method.initial_state(cfg, (6, 8), 2, 2)
    y = np.array([0, 1, 1])
    for r in (1, 2):
        state, metrics = method.fit_round(cfg, state, box, x, y, r, 0, 0)
    assert int(state["counter.queries"][0]) == metrics["queries"] == 120 // (3 * 3) * 9


def test_hub_image_classifier_and_zero_shot_vlm_paths_on_tiny_local_models(tmp_path):
    from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTForImageClassification

    from fmbook.core import vlm

    torch.manual_seed(0)
    vit = ViTForImageClassification(ViTConfig(image_size=28, patch_size=14, hidden_size=8, num_hidden_layers=1,
                                              num_attention_heads=2, intermediate_size=16, num_labels=5))
    vit.save_pretrained(tmp_path / "vit")
    box = bb.hub_image_classifier_blackbox(str(tmp_path / "vit"))
    assert box.query(np.random.rand(2, 1, 28, 28).astype(np.float32)).shape == (2, 5)

    clip = CLIPModel(CLIPConfig(text_config={"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                                             "intermediate_size": 16, "vocab_size": 50},
                                vision_config={"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                                               "intermediate_size": 16, "image_size": 28, "patch_size": 14},
                                projection_dim=6))

    class StubTextCLIP(vlm.HubCLIP):  # a tokenizer-free text side; the image side is the real CLIP path
        def encode_texts(self, texts, batch_size=256):
            rng = np.random.default_rng(len(texts))
            return rng.standard_normal((len(texts), 6)).astype(np.float32)

    box = bb.vlm_blackbox(StubTextCLIP(clip, None, "tiny-clip"), ["a", "b", "c"])
    out = box.query(np.random.rand(4, 1, 28, 28).astype(np.float32))
    assert out.shape == (4, 3) and box.queries == 4


def test_federated_adapter_runs_through_the_core_simulator(monkeypatch):
    from fmbook.core.datasets import ImageSet
    from fmbook.core.fl import ClientData
    from fmbook.zoopfl import federated, setup

    rng = np.random.default_rng(0)

    def tiny_clients(config):
        out = []
        for k in range(config.num_clients):
            parts = [ImageSet(f"c{k}{s}", rng.integers(0, 255, (12, 28, 28), dtype=np.uint8),
                              np.arange(12) % 3, ("a", "b", "c")) for s in "tvs"]
            out.append(ClientData(f"c{k}", *parts))
        return out

    torch.manual_seed(0)
    box = bb.module_blackbox(nn.Sequential(nn.Flatten(), nn.Linear(784, 3)), (1, 28, 28), 3, "toy")
    monkeypatch.setattr(federated, "build_clients", lambda cfg: tiny_clients(cfg))
    monkeypatch.setattr(federated, "build_blackbox", lambda cfg: box)
    clients = setup.ClientsConfig(domains=("original", "invert"), clients_per_domain=1)
    cfg = method.ZooPFLConfig(bottleneck=4, embed_dim=2, hidden=8, rounds=3, warmup_rounds=1, query_budget=200,
                              batch_size=4, recon_epochs=1, remap_epochs=1, zo=zo.ZOConfig(q=2))
    res = federated.run_grid(["zero_shot", "remap_fedavg", "zoopfl"], [0], clients, setup.BlackBoxConfig(), cfg)
    final = res.final()
    assert set(final["method"]) == {"zero_shot", "remap_fedavg", "zoopfl"} and len(final) == 6
    assert final[final["method"] == "zoopfl"]["queries"].max() <= 200
    curves = res.curves()
    zs = curves[curves["method"] == "zero_shot"]
    assert (zs["bytes_total"].fillna(0) == 0).all()  # nothing shared
    assert curves[curves["method"] == "zoopfl"]["bytes_total"].max() > 0


def test_zeroth_order_training_alone_lowers_the_loss_through_the_black_box():
    """Re-mapping frozen (lr 0): only the ZO-trained input perturbation can lower the loss."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.stack([torch.ones(16), -torch.ones(16)]))
        net[1].bias.copy_(torch.tensor([0.0, 2.0]))
    box = bb.module_blackbox(net, (1, 4, 4), 2, "linear")
    x = np.full((32, 1, 4, 4), 0.05, np.float32)
    y = np.zeros(32, np.int64)  # the black box says class 1 for all of them
    cfg = method.ZooPFLConfig(method="zoopfl_no_ae", rounds=4, query_budget=4 * 8 * 4 * 5, batch_size=8,
                              lr_surgery=0.02, lr_remap=0.0, zo=zo.ZOConfig(q=3, mu=0.01))
    state = method.initial_state(cfg, (1, 4, 4), 2, 2)
    before = method.evaluate(cfg, state, box, x, y)["accuracy"]
    losses = []
    for r in range(1, 5):
        state, metrics = method.fit_round(cfg, state, box, x, y, r, 0, 0)
        losses.append(metrics["loss"])
    assert losses[-1] < losses[0] - 0.1
    assert before == 0.0 and method.evaluate(cfg, state, box, x, y)["accuracy"] == 1.0
    np.testing.assert_array_equal(state["remap.linear.weight"], np.eye(2, dtype=np.float32))
