"""A thin adapter from ZooPFL's local training to the book's federated core (:mod:`fmbook.core.fl`).

No federated loop lives here: :class:`ZooPFLTask` is a ``FederatedTask`` (``initial_state``, ``fit``,
``evaluate``) and :func:`run_method` hands it to ``fl.simulate`` (in-process) or
``fl.run_flower_simulation`` (Flower's simulation engine), with a ``SharePolicy`` from the method's
``share`` groups. Same task, same seed: the same numbers on either engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fmbook.zoopfl import method as _method
from fmbook.zoopfl.blackbox import ZooPFLError
from fmbook.zoopfl.setup import BlackBoxConfig, ClientsConfig, build_blackbox, build_clients, to_inputs

ENGINES = ("simulate", "flower")
FACTORY = "fmbook.zoopfl.federated:make_task"


class ZooPFLTask:
    """One method on one set of clients and one black box (built lazily, once per process)."""

    def __init__(self, clients: dict, blackbox: dict, method: dict, seed: int = 0) -> None:
        self.clients_config = ClientsConfig(**clients)
        self.blackbox_config = BlackBoxConfig(**blackbox)
        self.config = _method.ZooPFLConfig.from_dict(method)
        self.seed = int(seed)
        self.num_clients = self.clients_config.num_clients
        self.client_names = [f"{d} {j}" for d in self.clients_config.domains
                             for j in range(self.clients_config.clients_per_domain)]
        self._clients = None
        self._blackbox = None
        self._arrays: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def blackbox(self):
        if self._blackbox is None:
            self._blackbox = build_blackbox(self.blackbox_config)
        return self._blackbox

    @property
    def clients(self):
        if self._clients is None:
            self._clients = build_clients(self.clients_config)
        return self._clients

    def arrays(self, cid: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        if (cid, split) not in self._arrays:
            data = self.clients[cid].split(split)
            self._arrays[(cid, split)] = (to_inputs(data.images), np.asarray(data.labels, np.int64))
        return self._arrays[(cid, split)]

    def initial_state(self) -> dict[str, np.ndarray]:
        return _method.initial_state(self.config, self.blackbox.input_shape, self.blackbox.num_outputs,
                                     len(self.clients[0].classes), self.seed)

    def fit(self, cid: int, state: dict[str, np.ndarray], config) -> tuple[dict[str, np.ndarray], int, dict[str, float]]:
        from fmbook.core.vision import deterministic

        x, y = self.arrays(cid, "train")
        with deterministic(config.seed * 7919 + cid):
            new_state, metrics = _method.fit_round(self.config, state, self.blackbox, x, y, config.round,
                                                   config.seed, cid)
        return new_state, len(y), metrics

    def evaluate(self, cid: int, state: dict[str, np.ndarray], round_: int) -> dict[str, float]:
        from fmbook.core.vision import deterministic

        x, y = self.arrays(cid, "test")
        with deterministic(0):
            return _method.evaluate(self.config, state, self.blackbox, x, y)


def make_task(**kwargs: Any) -> ZooPFLTask:
    """The ``TaskSpec`` factory (``fmbook.zoopfl.federated:make_task``)."""
    return ZooPFLTask(**kwargs)


def task_kwargs(method: str, clients: ClientsConfig, blackbox: BlackBoxConfig, config: _method.ZooPFLConfig,
                seed: int) -> dict[str, Any]:
    return {"clients": clients.to_dict(), "blackbox": blackbox.to_dict(),
            "method": config.for_method(method).to_dict(), "seed": int(seed)}


def run_method(method: str, clients: ClientsConfig, blackbox: BlackBoxConfig, config: _method.ZooPFLConfig,
               seed: int = 0, engine: str = "simulate", evaluate_every: int = 1):
    """One federated run of ``method`` (an ``fl.FLHistory``); ``zero_shot`` runs one no-op round."""
    from fmbook.core import fl

    if engine not in ENGINES:
        raise ZooPFLError(f"unknown engine {engine!r}; allowed: {', '.join(ENGINES)}")
    cfg = config.for_method(_method.check_method(method))
    spec = fl.TaskSpec(FACTORY, task_kwargs(method, clients, blackbox, config, seed))
    shared, local = _method.share_patterns(cfg)
    policy = fl.SharePolicy(local=local, shared=shared)
    rounds = 1 if method == "zero_shot" else cfg.rounds
    if engine == "flower":
        return fl.run_flower_simulation(spec, "fedavg", rounds, policy, seed, evaluate_every)
    return fl.simulate(spec, "fedavg", rounds, policy, seed, evaluate_every)


@dataclass
class Results:
    """Every evaluation of every run: one row per (method, seed, round, client)."""

    rows: pd.DataFrame
    bytes: pd.DataFrame  # per (method, seed, round): bytes_down, bytes_up (all clients)
    seconds: dict[str, float] = field(default_factory=dict)
    client_names: list[str] = field(default_factory=list)

    def final(self) -> pd.DataFrame:
        """The last evaluated round of every run: (method, seed, client) -> accuracy, queries."""
        last = self.rows.groupby(["method", "seed"])["round"].transform("max")
        return self.rows[self.rows["round"] == last].reset_index(drop=True)

    def curves(self) -> pd.DataFrame:
        """Mean over clients per (method, seed, round): accuracy, queries per client, cumulative bytes."""
        mean = self.rows.groupby(["method", "seed", "round"], as_index=False)[["accuracy", "queries"]].mean()
        b = self.bytes.sort_values("round").copy()
        b["bytes_total"] = b.groupby(["method", "seed"])[["bytes_down", "bytes_up"]].cumsum().sum(axis=1)
        return mean.merge(b[["method", "seed", "round", "bytes_total"]], on=["method", "seed", "round"], how="left")

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows.to_dict(orient="records"), "bytes": self.bytes.to_dict(orient="records"),
                "seconds": self.seconds}


def history_rows(history, method: str, seed: int, names: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    ev = history.eval_frame()
    ev = ev.assign(method=method, seed=seed, client_name=[names[c] for c in ev["client"]])
    server = history.server_frame()
    b = server[["round", "bytes_down", "bytes_up"]].assign(method=method, seed=seed)
    return ev, b


def _one_run(args: tuple) -> tuple[pd.DataFrame, pd.DataFrame, float, list[str]]:
    m, seed, clients_dict, blackbox_dict, config_dict, engine, evaluate_every = args
    import torch

    torch.set_num_threads(1)
    clients, blackbox = ClientsConfig(**clients_dict), BlackBoxConfig(**blackbox_dict)
    config = _method.ZooPFLConfig.from_dict(config_dict)
    t0 = time.perf_counter()
    history = run_method(m, clients, blackbox, config, seed, engine, evaluate_every)
    names = ZooPFLTask(clients_dict, blackbox_dict, config_dict, seed).client_names
    ev, b = history_rows(history, m, seed, names)
    return ev, b, time.perf_counter() - t0, names


def run_grid(methods: Sequence[str], seeds: Sequence[int], clients: ClientsConfig, blackbox: BlackBoxConfig,
             config: _method.ZooPFLConfig, engine: str = "simulate", evaluate_every: int = 1,
             log=None, workers: int = 1) -> Results:
    """Every method x seed on the same clients (re-drawn per seed), black box and budget.

    ``workers > 1`` runs independent (method, seed) runs in that many processes (each run is
    deterministic on its own, so the numbers do not depend on ``workers``); Flower runs stay serial.
    """
    for m in methods:
        _method.check_method(m)
    if workers < 1:
        raise ZooPFLError(f"workers must be >= 1, got {workers}")
    jobs = [(m, int(seed), {**clients.to_dict(), "seed": int(seed)}, blackbox.to_dict(), config.to_dict(), engine,
             evaluate_every) for seed in seeds for m in methods]
    if workers > 1 and engine == "simulate" and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        build_blackbox(blackbox)  # train (and cache) the black box once, before the workers load it
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            outputs = list(pool.map(_one_run, jobs))
    else:
        outputs = [_one_run(job) for job in jobs]
    rows, bytes_, seconds, names = [], [], {}, []
    for job, (ev, b, secs, names) in zip(jobs, outputs):
        rows.append(ev)
        bytes_.append(b)
        seconds[f"{job[0]}/{job[1]}"] = secs
        if log:
            log(f"{job[0]} seed {job[1]}: {secs:.1f} s")
    return Results(pd.concat(rows, ignore_index=True), pd.concat(bytes_, ignore_index=True), seconds, names)


def code_version() -> str:
    """Hash of the ZooPFL package's and the federated core's sources (part of every cache key)."""
    import hashlib
    from pathlib import Path

    import fmbook.core.fl as fl_pkg

    here = Path(__file__).parent
    files = sorted(here.glob("*.py")) + sorted(Path(fl_pkg.__file__).parent.glob("*.py"))
    files.append(Path(__file__).parents[1] / "core" / "vision.py")
    return hashlib.sha256(b"".join(f.read_bytes() for f in files) + torch_version().encode()).hexdigest()[:12]


def torch_version() -> str:
    import torch

    return torch.__version__


def cached_grid(methods: Sequence[str], seeds: Sequence[int], clients: ClientsConfig, blackbox: BlackBoxConfig,
                config: _method.ZooPFLConfig, engine: str = "simulate", evaluate_every: int = 1,
                log=None, workers: int = 1) -> tuple[Results, bool]:
    """:func:`run_grid`, cached under ``cache_dir()/zoopfl/<key>.json`` (key: every setting and the
    code); returns ``(results, from_cache)``. Notebooks that show the same runs share them this way."""
    import hashlib
    import json

    from fmbook.core.paths import cache_dir

    payload = {"methods": list(methods), "seeds": [int(s) for s in seeds], "clients": clients.to_dict(),
               "blackbox": blackbox.to_dict(), "config": config.to_dict(), "engine": engine,
               "evaluate_every": evaluate_every, "code": code_version()}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / "zoopfl" / f"{key}.json"
    if path.is_file():
        data = json.loads(path.read_text())
        return Results(pd.DataFrame(data["rows"]), pd.DataFrame(data["bytes"]), data["seconds"],
                       data["client_names"]), True
    results = run_grid(methods, seeds, clients, blackbox, config, engine, evaluate_every, log, workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{key}.{time.time_ns()}.json")
    tmp.write_text(json.dumps({**results.to_dict(), "client_names": results.client_names}, default=float))
    tmp.replace(path)
    return results, False
