"""fmbook.fedclip: the adapter's form and size, its zero-shot start, the task on the core, claims, full path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fmbook import fedclip
from fmbook.core import fl


def test_adapter_parameter_count_is_2_d2_plus_d():
    assert fedclip.adapter_parameters(512) == 525_312 == fedclip.PAPER_ADAPTER_PARAMS
    assert fedclip.adapter_parameters(384) == 2 * (384 * 384 + 384) == 295_680
    for d in (4, 384):
        adapter = fedclip.make_adapter(d)
        assert sum(p.numel() for p in adapter.parameters()) == fedclip.adapter_parameters(d)
    with pytest.raises(fedclip.FedCLIPError):
        fedclip.adapter_parameters(0)


def test_adapter_is_softmax_of_w2_tanh_w1_f_times_f():
    d = 6
    adapter = fedclip.make_adapter(d, seed=3)
    f = torch.randn(5, d, generator=torch.Generator().manual_seed(0))
    w1, b1, w2, b2 = adapter[0].weight, adapter[0].bias, adapter[2].weight, adapter[2].bias
    by_hand = torch.softmax(torch.tanh(f @ w1.T + b1) @ w2.T + b2, dim=1) * f
    assert torch.allclose(fedclip.adapt(adapter, f), by_hand, atol=1e-6)
    state = {f"adapter.{k}": v.detach().numpy() for k, v in adapter.state_dict().items()}
    assert np.allclose(fedclip.apply_adapter(state, f.numpy()), by_hand.detach().numpy(), atol=1e-6)


def test_zero_w2_and_b2_give_a_uniform_softmax_and_the_zero_shot_predictions():
    d, rng = 8, np.random.default_rng(0)
    adapter = fedclip.make_adapter(d)
    with torch.no_grad():
        adapter[2].weight.zero_()
        adapter[2].bias.zero_()
    f = torch.as_tensor(rng.normal(size=(40, d)), dtype=torch.float32)
    assert torch.allclose(adapter(f), torch.full((40, d), 1.0 / d))
    assert torch.allclose(fedclip.adapt(adapter, f), f / d)
    classes = rng.normal(size=(5, d))
    assert np.array_equal(fedclip.predict(f.numpy(), classes, adapter), fedclip.predict(f.numpy(), classes))


def test_contrastive_loss_is_clips_symmetric_loss():
    from fmbook.core.vlm import clip_loss

    gen = torch.Generator().manual_seed(1)
    img, txt = torch.randn(4, 5, generator=gen), torch.randn(4, 5, generator=gen)
    expected = clip_loss(torch.nn.functional.normalize(img, dim=-1), torch.nn.functional.normalize(txt, dim=-1),
                         torch.tensor(np.log(100.0)))
    assert float(fedclip.contrastive_loss(img, txt, 100.0)) == pytest.approx(float(expected), rel=1e-5)


def test_bad_inputs_name_the_allowed_values():
    with pytest.raises(fedclip.FedCLIPError, match="allowed: original"):
        fedclip.check_setup(["original", "watercolour"], "original")
    with pytest.raises(fedclip.FedCLIPError, match="not clients"):
        fedclip.check_setup(["original", "invert"], "sketch")
    with pytest.raises(fedclip.FedCLIPError, match="rounds"):
        fedclip.FedCLIPConfig(rounds=0)
    with pytest.raises(fedclip.FedCLIPError, match="fedavg"):
        fedclip.strategy_for("fedsgd", fedclip.FedCLIPConfig())


def test_strategies_follow_the_official_code():
    cfg = fedclip.FedCLIPConfig()
    strategy, policy = fedclip.strategy_for("fedclip", cfg)
    assert not strategy.weighted and policy.is_shared("adapter.0.weight")  # equal-weight average of adapters
    _, local = fedclip.strategy_for("local-adapter", cfg)
    assert not local.is_shared("adapter.0.weight")
    prox, _ = fedclip.strategy_for("fedprox", cfg)
    assert prox.proximal_mu == cfg.proximal_mu
    assert (cfg.lr, cfg.betas, cfg.eps, cfg.weight_decay, cfg.batch_size, cfg.rounds) == \
        (5e-5, (0.9, 0.98), 1e-6, 0.2, 32, 200)


def test_the_283x_arithmetic_from_the_config_dims():
    counts = fedclip.clip_vit_b32_parameters()
    assert counts["all"] / 525_312 == pytest.approx(288, abs=1)
    assert counts["image_tower"] / 525_312 == pytest.approx(167, abs=1)
    table = fedclip.speedup_table(384, 101_680, {"measured bytes": (10.0, 5.0)})
    assert list(table["kind"]).count("measured") == 1 and table["ratio"].iloc[-1] == 2.0


def _summary():
    rows = []
    rng = np.random.default_rng(0)
    for heldout in ("a", "b", "c"):
        for seed in (0, 1):
            base = 0.5 + 0.01 * rng.normal()
            rows += [{"method": "zero-shot", "heldout": heldout, "seed": seed, "heldout_accuracy": base,
                      "heldout_round0": base},
                     {"method": "fedclip", "heldout": heldout, "seed": seed, "heldout_accuracy": base + 0.2,
                      "heldout_round0": base + 0.001 * rng.normal()},
                     {"method": "fedavg", "heldout": heldout, "seed": seed, "heldout_accuracy": base - 0.1 + 0.01 * rng.normal(),
                      "heldout_round0": base},
                     {"method": "fedprox", "heldout": heldout, "seed": seed, "heldout_accuracy": base + 0.2 + 0.01 * rng.normal(),
                      "heldout_round0": base}]
    return pd.DataFrame(rows)


def test_claims_on_a_synthetic_summary():
    rows = fedclip.claims(_summary(), fedclip.FedCLIPConfig(zero_shot_margin=1.0), bytes_fedavg=1e6, bytes_fedclip=1e3)
    verdicts = [r.verdict for r in rows]
    assert verdicts[0] == "holds"  # +30 points over FedAvg
    assert verdicts[1] == "not resolved"  # about 0 against FedProx
    assert verdicts[2] == "holds"  # round 0 within ±1 point of zero-shot
    assert verdicts[3] == "holds" and rows[3].estimate == pytest.approx(3.0)  # 1000x = 3 orders
    more = fedclip.claims(_summary(), fedclip.FedCLIPConfig(), bytes_fedavg=1e3, bytes_fedclip=3e3)
    assert more[3].verdict == "contradicted"
    table = fedclip.accuracy_table(_summary())
    assert set(table["method"]) == {"zero-shot", "fedclip", "fedavg", "fedprox"} and (table["seeds"] == 2).all()


# --------------------------------------------------------------------------- the task on the core


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FMBOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_full_code_path_on_a_tiny_random_clip(tmp_path, cache):
    """The hub path (CLIPModel + CLIPProcessor from a folder): prepare, FedCLIP and FedAvg on the core."""
    from test_vlm import _tiny_clip_folder, synthetic_shapes

    folder = str(_tiny_clip_folder(tmp_path / "tiny-clip"))
    cfg = fedclip.FedCLIPConfig(rounds=2, lr=1e-3, batch_size=8)
    prepared = fedclip.prepare(folder, ["original", "invert", "blur"], per_domain=30, data_seed=0, config=cfg,
                               base=synthetic_shapes(30, 0))
    assert prepared.dim == 16 and prepared.info["tower"]["kind"] == "hub"
    summary, curves, info = fedclip.run_grid(prepared, ["blur"], ["zero-shot", "fedclip", "fedavg"], [0], cfg)
    assert set(summary["method"]) == {"zero-shot", "fedclip", "fedavg"}
    by = summary.set_index("method")
    # FedCLIP sends the adapter (2 (d^2 + d) float32 numbers plus npy headers), FedAvg the vision tower
    assert by.loc["fedclip", "bytes_up_per_round"] >= 2 * 4 * fedclip.adapter_parameters(16)
    assert by.loc["fedavg", "bytes_up_per_round"] > 2 * 4 * fedclip.tower_parameters(prepared)
    assert set(curves["round"]) == {0, 1, 2}
    again = fedclip.run_grid(prepared, ["blur"], ["zero-shot", "fedclip", "fedavg"], [0], cfg)
    assert again[0].equals(summary) or np.allclose(again[0]["heldout_accuracy"], summary["heldout_accuracy"])


def test_offline_task_starts_at_zero_shot_and_trains_only_the_adapter(tmp_path, cache):
    """A tiny offline setting with a stand-in VLM (random features): round 0 of FedCLIP with zero W2, b2
    equals zero-shot, and local training changes the adapter only."""
    from test_vlm import BagOfWordsTower, synthetic_shapes

    from fmbook.core import vlm

    model = vlm.train_lit(synthetic_shapes(16, 0), vlm.LiTConfig(width=4, epochs=1, batch_size=16,
                                                                templates=vlm.TRAIN_TEMPLATES[:2]),
                          BagOfWordsTower(), use_cache=False)
    cfg = fedclip.FedCLIPConfig(rounds=1, lr=1e-2, batch_size=8)
    prepared = fedclip.prepare("test/lit", ["original", "invert", "sketch"], per_domain=30, data_seed=0,
                               config=cfg, vlm=model, base=synthetic_shapes(30, 1))
    task = fedclip.FedCLIPTask(str(prepared.folder), prepared.domains, "sketch", "fedclip", 0, cfg.to_dict())
    state = dict(task.initial_state())
    state["adapter.2.weight"] = np.zeros_like(state["adapter.2.weight"])
    state["adapter.2.bias"] = np.zeros_like(state["adapter.2.bias"])
    for domain in prepared.domains:
        labels = prepared.get(domain, "test", "labels")
        zs = fedclip.predict(prepared.get(domain, "test", "features"), prepared.class_vectors(domain))
        ad = fedclip.predict(prepared.get(domain, "test", "features"), prepared.class_vectors(domain), state)
        assert np.array_equal(zs, ad) and len(labels) == len(zs)
    new, n, metrics = task.fit(0, task.initial_state(), fl.FitConfig(1, 0))
    assert set(new) == set(task.initial_state()) and n == len(prepared.get("original", "train", "labels"))
    assert any(not np.allclose(new[k], task.initial_state()[k]) for k in new)
    history = fl.simulate(fl.TaskSpec("fmbook.fedclip:make_task",
                                      fedclip.task_kwargs(prepared, "sketch", "fedclip", 0, cfg)),
                          *fedclip.strategy_for("fedclip", cfg)[:1], rounds=1,
                          policy=fedclip.strategy_for("fedclip", cfg)[1])
    assert set(history.final_state) == set(task.initial_state())
    assert (history.fit_frame()["bytes_up"] == fl.payload_bytes(history.final_state)).all()
