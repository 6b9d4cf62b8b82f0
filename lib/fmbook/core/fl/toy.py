"""A tiny federated task (softmax regression on synthetic Gaussian clients) for tests and examples.

Client ``k`` draws ``n_per_client`` points in ``dim`` dimensions from class means shared by all clients
plus a client-specific shift (feature skew), with labels skewed by Dirichlet(``alpha``). The model is
``logits = head(relu(body(x)))``; ``SharePolicy(local=("head.*",))`` keeps the head personal.
Training: ``local_epochs`` of full-batch gradient descent in numpy (float64; no torch, so a ClientApp
process starts fast): the same inputs give the same numbers in any process. ``sleep_s`` and ``marker_dir``
exist for tests of the deployment engine (a slow client, and a file saying which round it trains).
"""

from __future__ import annotations

import numpy as np

from fmbook.core.fl.data import dirichlet_indices
from fmbook.core.fl.strategy import FitConfig, State, proximal_gradient


class ToyTask:
    def __init__(self, num_clients: int = 3, n_per_client: int = 60, dim: int = 6, num_classes: int = 3,
                 hidden: int = 8, alpha: float = 1.0, lr: float = 0.5, local_epochs: int = 2, seed: int = 0,
                 sleep_s: float = 0.0, marker_dir: str = "") -> None:
        self.num_clients, self.dim, self.num_classes, self.hidden = num_clients, dim, num_classes, hidden
        self.lr, self.local_epochs, self.seed = lr, local_epochs, seed
        self.sleep_s, self.marker_dir = sleep_s, marker_dir
        rng = np.random.default_rng(seed)
        means = rng.normal(0, 2.0, (num_classes, dim))
        labels = rng.integers(0, num_classes, n_per_client * num_clients * 2)
        parts = dirichlet_indices(labels, num_clients, alpha, seed, min_per_client=8)
        self.data = []
        for k, idx in enumerate(parts):
            y = labels[idx][:n_per_client]
            shift = rng.normal(0, 0.5, dim)
            x = means[y] + shift + rng.normal(0, 1.0, (len(y), dim))
            cut = int(0.7 * len(y))
            self.data.append(((x[:cut].astype(np.float32), y[:cut]), (x[cut:].astype(np.float32), y[cut:])))
        self.client_names = [f"client {k}" for k in range(num_clients)]

    def initial_state(self) -> State:
        rng = np.random.default_rng(self.seed + 1)
        return {"body.weight": (rng.normal(0, 0.3, (self.hidden, self.dim))).astype(np.float32),
                "body.bias": np.zeros(self.hidden, np.float32),
                "head.weight": (rng.normal(0, 0.3, (self.num_classes, self.hidden))).astype(np.float32),
                "head.bias": np.zeros(self.num_classes, np.float32)}

    @staticmethod
    def _forward(params, x):
        pre = x @ params["body.weight"].T + params["body.bias"]
        h = np.maximum(pre, 0.0)
        return pre, h, h @ params["head.weight"].T + params["head.bias"]

    def fit(self, cid: int, state: State, config: FitConfig):
        """Full-batch gradient descent on cross-entropy (+ FedProx's term), hand-written backprop."""
        if self.marker_dir:  # tests: say "client cid is training round r" (a file), then take sleep_s
            from pathlib import Path

            Path(self.marker_dir, f"fit-r{config.round}-c{cid}").touch()
        if self.sleep_s:
            import time

            time.sleep(self.sleep_s)
        (x, y), _ = self.data[cid]
        x = x.astype(np.float64)
        params = {k: np.asarray(v, dtype=np.float64).copy() for k, v in state.items()}
        onehot = np.eye(self.num_classes)[y]
        loss = 0.0
        for _ in range(self.local_epochs):
            pre, h, logits = self._forward(params, x)
            logits = logits - logits.max(axis=1, keepdims=True)
            prob = np.exp(logits)
            prob /= prob.sum(axis=1, keepdims=True)
            loss = float(-np.log(prob[np.arange(len(y)), y] + 1e-12).mean())
            d_logits = (prob - onehot) / len(y)
            d_h = d_logits @ params["head.weight"]
            d_pre = d_h * (pre > 0)
            grads = {"head.weight": d_logits.T @ h, "head.bias": d_logits.sum(0),
                     "body.weight": d_pre.T @ x, "body.bias": d_pre.sum(0)}
            if config.proximal_mu > 0:
                for name, g in proximal_gradient(params, config.anchor, config.proximal_mu).items():
                    grads[name] = grads[name] + g
            for name in params:
                params[name] -= self.lr * grads[name]
        return {k: v.astype(np.float32) for k, v in params.items()}, len(y), {"train_loss": loss}

    def evaluate(self, cid: int, state: State, round_: int):
        _, (x, y) = self.data[cid]
        params = {k: np.asarray(v, dtype=np.float64) for k, v in state.items()}
        logits = self._forward(params, x.astype(np.float64))[2]
        return {"test_accuracy": float((logits.argmax(1) == y).mean()), "n_test": len(y)}

    def server_evaluate(self, shared: State, round_: int):
        return {"shared_norm": float(sum(np.square(np.asarray(v, np.float64)).sum() for v in shared.values()))}


def make_toy_task(**kwargs) -> ToyTask:
    return ToyTask(**kwargs)
