"""fmbook.core.fl: splits, strategies, byte accounting, what stays local, and the three engines agreeing."""

from __future__ import annotations

import io
import shutil
import time

import numpy as np
import pytest
import torch

from fmbook.core import fl
from fmbook.core.datasets import ImageSet

TOY = fl.TaskSpec("fmbook.core.fl.toy:make_toy_task", {})


def _labels(per_class=(50, 30, 20), seed=0):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    return np.random.default_rng(seed).permutation(labels)


# --------------------------------------------------------------------------- Dirichlet split

def test_dirichlet_split_is_a_partition_seeded_and_sized():
    labels = _labels()
    parts = fl.dirichlet_indices(labels, 4, alpha=0.5, seed=3, min_per_client=5)
    joined = np.sort(np.concatenate(parts))
    assert np.array_equal(joined, np.arange(len(labels)))  # every index exactly once
    assert all(len(p) >= 5 for p in parts)
    again = fl.dirichlet_indices(labels, 4, alpha=0.5, seed=3, min_per_client=5)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = fl.dirichlet_indices(labels, 4, alpha=0.5, seed=4, min_per_client=5)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other))


def test_small_alpha_skews_labels_more_than_large_alpha():
    labels = _labels((400, 400, 400, 400))

    def skew(alpha):
        values = []
        for seed in range(5):
            for part in fl.dirichlet_indices(labels, 5, alpha, seed):
                share = np.bincount(labels[part], minlength=4) / max(1, len(part))
                values.append(share.max())
        return float(np.mean(values))

    assert skew(0.1) > 0.6 > 0.35 > skew(100.0)  # mostly one class vs near uniform (0.25)


def test_dirichlet_errors_are_clear():
    labels = _labels((5, 5))
    for alpha in (0, -1.0, float("nan")):
        with pytest.raises(fl.FLDataError, match="alpha"):
            fl.dirichlet_indices(labels, 2, alpha, 0)
    with pytest.raises(fl.FLDataError, match="more clients"):
        fl.dirichlet_indices(labels, 6, 1.0, 0)
    with pytest.raises(fl.FLDataError, match="num_clients"):
        fl.dirichlet_indices(labels, 0, 1.0, 0)


def _tiny_images(n_per_class=20, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    images = rng.integers(0, 255, (len(labels), 28, 28)).astype(np.uint8)
    return ImageSet("tiny", images, labels, tuple(f"c{k}" for k in range(classes)))


def test_label_skew_and_domain_clients_split_60_20_20_and_say_who_holds_what():
    data = _tiny_images(30)  # 3 classes x 30
    clients = fl.label_skew_clients(data, 3, alpha=1.0, seed=0, min_per_client=12)
    assert sum(len(c) for c in clients) == len(data)
    domains = fl.domain_clients(data, ["original", "invert", "blur"], seed=0)
    assert [c.name for c in domains] == ["original", "invert", "blur"]
    for c in domains:
        assert len(c.train) == 18 and len(c.val) == 6 and len(c.test) == 6  # 10 per class: 60/20/20
        assert set(np.bincount(c.train.labels)) == {6}
    # disjoint source images: an inverted image is never the inverse of an original-domain image
    originals = {img.tobytes() for c in [domains[0]] for s in ("train", "val", "test") for img in c.split(s).images}
    inverted = {(255 - img).tobytes() for s in ("train", "val", "test") for img in domains[1].split(s).images}
    assert not originals & inverted
    table = fl.holdings_table(domains)
    assert set(table.columns) == {"client_id", "client", "split", "class", "count"}
    assert table["count"].sum() == sum(len(c) for c in domains)
    fig = fl.plot_holdings(table)
    assert fig.axes[0].get_title()
    with pytest.raises(fl.FLDataError, match="allowed"):
        fl.domain_clients(data, ["watercolour"], seed=0)


def test_digits_is_a_domain_of_its_own():
    clients = fl.domain_clients(_tiny_images(9), ["original", "digits"], seed=0, per_domain=50)
    assert clients[1].classes == tuple(str(d) for d in range(10))
    assert clients[1].train.images.shape[1:] == (28, 28)


# --------------------------------------------------------------------------- strategies

def test_fedavg_is_the_weighted_mean_on_hand_values():
    updates = [(1, {"w": np.array([1.0, 2.0], np.float32), "n": np.array(4)}, 1),
               (0, {"w": np.array([3.0, 6.0], np.float32), "n": np.array(8)}, 3)]
    out = fl.FedAvg().aggregate(updates)
    assert np.allclose(out["w"], [(1 * 1 + 3 * 3) / 4, (2 * 1 + 6 * 3) / 4]) and out["w"].dtype == np.float32
    assert out["n"] == 7  # integer arrays: rounded mean
    equal = fl.FedAvg(weighted=False).aggregate(updates)
    assert np.allclose(equal["w"], [2.0, 4.0])
    with pytest.raises(fl.StrategyError):
        fl.FedAvg().aggregate([])


def test_fedprox_proximal_term_and_its_gradient():
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    anchor = {"w": np.array([0.0, 1.0, 0.5], np.float32)}
    mu = 0.3
    penalty = fl.proximal_penalty({"w": w}, anchor, mu)
    assert float(penalty.detach()) == pytest.approx(mu / 2 * (1.0 + 9.0 + 0.0))
    penalty.backward()
    assert torch.allclose(w.grad, mu * (w.detach() - torch.from_numpy(anchor["w"])))
    grad = fl.proximal_gradient({"w": w.detach().numpy()}, anchor, mu)
    assert np.allclose(grad["w"], w.grad.numpy())
    assert fl.make_strategy("fedprox", mu=0.3).proximal_mu == 0.3 and fl.FedAvg().proximal_mu == 0.0


def test_unknown_strategy_lists_the_allowed_ones():
    with pytest.raises(fl.StrategyError, match="fedavg, fedprox"):
        fl.make_strategy("fedsgd")
    with pytest.raises(fl.StrategyError, match="fraction_fit"):
        fl.FedAvg(fraction_fit=0)


def test_sampling_is_seeded_and_respects_the_fraction():
    s = fl.FedAvg(fraction_fit=0.5, min_fit_clients=1)
    assert s.sample(range(6), 1, 0) == s.sample(range(6), 1, 0) and len(s.sample(range(6), 1, 0)) == 3
    assert fl.FedAvg().sample([2, 0, 1], 1, 0) == [0, 1, 2]


# --------------------------------------------------------------------------- bytes and what travels

def test_byte_accounting_equals_the_serialised_sizes():
    from flwr.app import Array, ArrayRecord

    state = {"a": np.ones((3, 4), np.float32), "b": np.arange(5, dtype=np.int64)}
    flower_bytes = sum(len(Array.from_numpy_ndarray(v).data) for v in state.values())
    numpy_bytes = 0
    for v in state.values():
        buffer = io.BytesIO()
        np.save(buffer, v, allow_pickle=False)
        numpy_bytes += len(buffer.getvalue())
    assert fl.payload_bytes(state) == flower_bytes == numpy_bytes
    assert ArrayRecord({k: Array.from_numpy_ndarray(v) for k, v in state.items()}).count_bytes() == \
        flower_bytes + len("a") + len("b")
    assert fl.tensor_bytes(state) == 12 * 4 + 5 * 8 and fl.num_parameters(state) == 17
    # the history's counts are those of the messages
    history = fl.simulate(TOY, "fedavg", 2)
    shared = history.final_state
    assert (history.fit_frame()["bytes_up"] == fl.payload_bytes(shared)).all()
    assert (history.fit_frame()["bytes_down"] == fl.payload_bytes(shared)).all()


def test_local_parameters_are_never_sent():
    task = TOY.build()
    policy = fl.SharePolicy(local=("head.*",))
    transport = fl.InProcessTransport(task, policy, seed=0)
    history = fl.run_rounds(task, fl.FedAvg(), policy, transport, rounds=2)
    assert transport.sent_names and all(n.startswith("body.") for names in transport.sent_names for n in names)
    assert set(history.final_state) == {"body.weight", "body.bias"}
    heads = [transport.local[c]["head.weight"] for c in range(task.num_clients)]
    assert not np.allclose(heads[0], heads[1])  # personal heads differ
    nothing = fl.simulate(TOY, "fedavg", 2, policy=fl.SharePolicy(shared=()))
    assert (nothing.fit_frame()["bytes_up"] == 0).all() and nothing.final_state == {}


def test_simulator_is_deterministic_and_learns():
    a = fl.simulate(TOY, fl.FedProx(mu=0.1), 3, seed=1)
    b = fl.simulate(TOY, fl.FedProx(mu=0.1), 3, seed=1)
    assert all(np.array_equal(a.final_state[k], b.final_state[k]) for k in a.final_state)
    acc = a.eval_frame().groupby("round")["test_accuracy"].mean()
    assert acc.loc[3] > acc.loc[0]
    assert list(a.server_frame()["round"]) == [0, 1, 2, 3] and "shared_norm" in a.server_frame()


def test_bad_run_settings_are_refused():
    with pytest.raises(fl.FLRunError, match="rounds"):
        fl.simulate(TOY, "fedavg", 0)
    with pytest.raises(fl.FLRunError, match="module:function"):
        fl.TaskSpec("no_colon")


def test_a_round_with_too_few_clients_keeps_the_last_good_model():
    task = TOY.build()
    policy = fl.SharePolicy()

    class Flaky(fl.InProcessTransport):
        def fit(self, round_, cids, payload, proximal_mu):
            replies = super().fit(round_, cids, payload, proximal_mu)
            return {c: r for c, r in replies.items() if round_ < 2 or c == 0}

    history = fl.run_rounds(task, fl.FedAvg(min_fit_clients=2), policy, Flaky(task, policy, 0), rounds=3)
    assert not history.ok and "round 2 failed" in history.status and history.completed_rounds == 1
    once = fl.simulate(TOY, fl.FedAvg(), 1)
    assert all(np.array_equal(history.final_state[k], once.final_state[k]) for k in once.final_state)
    with pytest.raises(fl.FLRoundError):
        fl.simulate(TOY, fl.FedAvg(min_fit_clients=4), 1)


# --------------------------------------------------------------------------- Flower engines

@pytest.mark.flower
def test_flower_simulation_gives_the_simulators_weights_and_bytes():
    """Two runs in one Flower simulation (Ray starts once) against the in-process simulator."""
    policy = fl.SharePolicy(local=("head.*",))
    two = fl.TaskSpec("fmbook.core.fl.toy:make_toy_task", {"num_clients": 2, "seed": 5})
    ours = [fl.simulate(TOY, fl.FedProx(mu=0.1), 3, policy=policy, seed=2), fl.simulate(two, "fedavg", 3, seed=1)]
    flower = fl.run_flower_batch([fl.make_run(TOY, fl.FedProx(mu=0.1), 3, policy, seed=2),
                                  fl.make_run(two, "fedavg", 3, seed=1)])
    for a, b in zip(ours, flower):
        assert b.ok and b.engine == "flower-simulation" and b.completed_rounds == 3
        assert b.client_ids == a.client_ids
        assert set(b.final_state) == set(a.final_state)
        for name in a.final_state:
            np.testing.assert_allclose(b.final_state[name], a.final_state[name], rtol=1e-6, atol=1e-7)
        assert b.bytes_per_round().equals(a.bytes_per_round())
        cols = ["round", "client", "test_accuracy"]
        assert b.eval_frame()[cols].equals(a.eval_frame()[cols])


@pytest.mark.flower
def test_deployment_engine_survives_a_supernode_killed_mid_run(tmp_path):
    """SuperLink + 3 SuperNodes as processes on 127.0.0.1; SuperNode 2 dies after round 1 starts."""
    from fmbook.core.fl.deploy import LocalFederation

    if shutil.which("flower-superlink") is None and not (
            __import__("pathlib").Path(__import__("sys").executable).parent / "flower-superlink").exists():
        pytest.skip("flower-superlink is not installed")
    marker = tmp_path / "markers"
    marker.mkdir()
    spec = fl.TaskSpec("fmbook.core.fl.toy:make_toy_task", {"sleep_s": 2.0, "marker_dir": str(marker)})
    run = fl.make_run(spec, fl.FedAvg(min_fit_clients=2), 2, seed=0, evaluate_every=0, round_timeout_s=40,
                      wait_for_nodes_s=60, result_dir=str(tmp_path / "result"))
    start = time.monotonic()
    with LocalFederation(tmp_path / "fed", 3) as fed:
        fed.submit(run)
        deadline = time.monotonic() + 90
        while not (marker / "fit-r1-c2").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (marker / "fit-r1-c2").exists(), "client 2 never started training"
        fed.stop_node(2)  # killed while it trains round 1
        history = fed.wait_for_history(tmp_path / "result", 150)
    assert all(p.poll() is not None for p in fed.procs.values())  # every process ended
    assert history.ok, history.status
    assert history.completed_rounds == 2
    fit = history.fit_frame()
    assert set(fit["client"]) == {0, 1}  # client 2's round-1 update never arrived
    assert any(f["client"] == 2 and f["phase"] == "fit" for f in history.failures)
    assert all(np.isfinite(v).all() for v in history.final_state.values())
    # the global model is FedAvg over the two survivors: the in-process run where client 2 never answers
    task = spec.build()
    policy = fl.SharePolicy()

    class WithoutTwo(fl.InProcessTransport):
        def fit(self, round_, cids, payload, proximal_mu):
            return super().fit(round_, [c for c in cids if c != 2], payload, proximal_mu)

    local = fl.TaskSpec("fmbook.core.fl.toy:make_toy_task", {}).build()
    expected = fl.run_rounds(local, fl.FedAvg(min_fit_clients=2), policy, WithoutTwo(local, policy, 0), 2,
                             evaluate_every=0)
    for name in expected.final_state:
        np.testing.assert_allclose(history.final_state[name], expected.final_state[name], rtol=1e-6)
    print(f"deployment test took {time.monotonic() - start:.0f} s")
