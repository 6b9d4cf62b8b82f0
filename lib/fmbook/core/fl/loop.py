"""The federated loop, written once: server rounds over a transport, and the client's step.

* :func:`client_train` / :func:`client_evaluate` -- what a client does with a request. The client's full
  state is its kept local parameters (or the task's initial state on first contact) overlaid with the
  global shared parameters it received; after local training only the *shared* part is returned
  (:class:`~fmbook.core.fl.strategy.SharePolicy`), the local part stays with the client.
* :func:`run_rounds` -- the server: round 0 evaluates the initial global model (unless
  ``evaluate_every=0``: then only the last round is evaluated); every round samples
  clients (:meth:`FedAvg.sample`), sends them the global shared state, aggregates the replies in client-
  id order, evaluates every client (and the task's ``server_evaluate``, e.g. a held-out domain), and
  records bytes, seconds and metrics. A round with fewer replies than ``min_fit_clients`` fails: it is
  recorded, the last good global model is kept and the run stops (``history.status``).
* a *transport* moves requests and replies: :class:`InProcessTransport` calls the client functions
  directly (the simulator); :mod:`fmbook.core.fl.flower` sends Flower messages. Both serialise the
  states to the same bytes, so the byte counts and the results agree.
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from fmbook.core.fl.strategy import (FedAvg, FitConfig, SharePolicy, State, StrategyError, decode_state,
                                     encode_state, payload_bytes, strategy_from_dict, strategy_to_dict)


class FLRunError(ValueError):
    """A federated run was asked for with impossible settings (the message names the parameter)."""


class FLRoundError(RuntimeError):
    """A round could not complete (too few clients replied); ``history`` holds what was done."""

    def __init__(self, message: str, history: "FLHistory") -> None:
        super().__init__(message)
        self.history = history


# --------------------------------------------------------------------------- tasks

class FederatedTask(Protocol):
    """What a federated method supplies (the same object serves the simulator and Flower).

    ``initial_state()`` -- the model's trainable state (name -> numpy array), identical for every client
    and deterministic. ``fit(cid, state, config)`` -> ``(new_state, num_examples, metrics)``: local
    training of client ``cid`` (deterministic given ``cid``, ``config.round`` and ``config.seed``;
    add :func:`~fmbook.core.fl.strategy.proximal_penalty` with ``config.anchor`` when
    ``config.proximal_mu > 0``). ``evaluate(cid, state, round)`` -> metrics of the client's model (e.g.
    ``val_accuracy``, ``test_accuracy``). Optional: ``server_evaluate(shared_state, round)`` -> metrics
    (e.g. on a held-out domain), ``client_names`` (a list). A task must be cheap to pickle: it is built
    from a :class:`TaskSpec` in every process that needs it (Ray actors, SuperNodes).
    """

    num_clients: int

    def initial_state(self) -> State: ...

    def fit(self, cid: int, state: State, config: FitConfig) -> tuple[State, int, dict[str, float]]: ...

    def evaluate(self, cid: int, state: State, round_: int) -> dict[str, float]: ...


@dataclass(frozen=True)
class TaskSpec:
    """How to build a task in any process: ``factory`` = ``"module:function"``, JSON-able ``kwargs``."""

    factory: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if ":" not in self.factory:
            raise FLRunError(f"TaskSpec.factory must read 'module:function', got {self.factory!r}")
        try:
            json.dumps(dict(self.kwargs))
        except TypeError as err:
            raise FLRunError(f"TaskSpec.kwargs must be JSON-able: {err}") from err

    def key(self) -> str:
        return json.dumps({"factory": self.factory, "kwargs": dict(self.kwargs)}, sort_keys=True)

    def build(self) -> FederatedTask:
        """The task (built once per process and spec, then reused)."""
        key = self.key()
        if key not in _TASKS:
            module, _, name = self.factory.partition(":")
            _TASKS[key] = getattr(importlib.import_module(module), name)(**dict(self.kwargs))
        return _TASKS[key]

    def to_dict(self) -> dict[str, Any]:
        return {"factory": self.factory, "kwargs": dict(self.kwargs)}


_TASKS: dict[str, Any] = {}


def resolve_task(task: FederatedTask | TaskSpec) -> FederatedTask:
    return task.build() if isinstance(task, TaskSpec) else task


# --------------------------------------------------------------------------- the client side

@dataclass
class FitReply:
    shared: State
    num_examples: int
    metrics: dict[str, float]
    seconds: float
    bytes_up: int = 0


def _client_state(task: FederatedTask, local: Mapping[str, np.ndarray] | None, incoming: Mapping[str, np.ndarray]) -> State:
    state = {k: np.array(v, copy=True) for k, v in task.initial_state().items()}
    for part in (local or {}), incoming:
        for name, value in part.items():
            if name not in state:
                raise FLRunError(f"parameter {name!r} is not in the task's state")
            state[name] = np.asarray(value)
    return state


def client_train(task: FederatedTask, policy: SharePolicy, cid: int, incoming: Mapping[str, np.ndarray],
                 local: Mapping[str, np.ndarray] | None, round_: int, seed: int,
                 proximal_mu: float = 0.0) -> tuple[FitReply, State]:
    """One client's training step: returns the reply (shared part only) and the new local part."""
    start = time.perf_counter()
    state = _client_state(task, local, incoming)
    config = FitConfig(round=round_, seed=seed, proximal_mu=proximal_mu, anchor=dict(incoming))
    new_state, n, metrics = task.fit(cid, state, config)
    shared, kept = policy.split(new_state)
    seconds = time.perf_counter() - start
    return FitReply(shared, int(n), {k: float(v) for k, v in metrics.items()}, seconds), kept


def client_evaluate(task: FederatedTask, cid: int, incoming: Mapping[str, np.ndarray],
                    local: Mapping[str, np.ndarray] | None, round_: int) -> dict[str, float]:
    """Metrics of client ``cid``'s model: its local part with the global shared part."""
    return {k: float(v) for k, v in task.evaluate(cid, _client_state(task, local, incoming), round_).items()}


# --------------------------------------------------------------------------- history

@dataclass
class FLHistory:
    """Everything a run produced.

    ``fit``: one row per (round, client trained): ``bytes_down`` (global shared state sent),
    ``bytes_up`` (update received), ``fit_seconds`` (on the client), ``num_examples`` and the task's
    training metrics. ``evaluations``: one row per (round, client) with the task's metrics (round 0 =
    the initial model). ``server``: one row per round (``round_seconds``, ``bytes_down``/``bytes_up``
    summed over clients, and the task's ``server_evaluate`` metrics). ``failures``: rounds or clients
    that did not answer. ``final_state``: the last good global shared state. ``states``: the global
    shared state after every round (when ``keep_states``).
    """

    strategy: dict[str, Any]
    policy: dict[str, Any]
    rounds: int
    seed: int
    client_ids: list[int]
    engine: str = "in-process"
    fit: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    server: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    final_state: State = field(default_factory=dict)
    states: dict[int, State] = field(default_factory=dict)
    status: str = "ok"
    completed_rounds: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def fit_frame(self):
        import pandas as pd
        return pd.DataFrame(self.fit)

    def eval_frame(self):
        import pandas as pd
        return pd.DataFrame(self.evaluations)

    def server_frame(self):
        import pandas as pd
        return pd.DataFrame(self.server)

    def bytes_per_round(self) -> "Any":
        """Per round: bytes sent by the server and received from clients (training messages)."""
        frame = self.fit_frame()
        return frame.groupby("round")[["bytes_down", "bytes_up"]].sum().reset_index()

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["final_state"] = {k: {"dtype": str(v.dtype), "shape": list(v.shape), "data": np.asarray(v).ravel().tolist()}
                              for k, v in self.final_state.items()}
        out["states"] = {}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FLHistory":
        data = dict(data)
        data["final_state"] = {k: np.asarray(v["data"], dtype=v["dtype"]).reshape(v["shape"])
                               for k, v in data.get("final_state", {}).items()}
        data["states"] = {}
        return cls(**data)


# --------------------------------------------------------------------------- transports

class Transport(Protocol):
    """Moves the server's requests to clients and their replies back."""

    engine: str

    def client_ids(self) -> list[int]: ...

    def fit(self, round_: int, cids: Sequence[int], payload: dict[str, bytes],
            proximal_mu: float) -> dict[int, FitReply | str]: ...

    def evaluate(self, round_: int, cids: Sequence[int], payload: dict[str, bytes]) -> dict[int, dict | str]: ...


class InProcessTransport:
    """The simulator: clients are function calls in this process, their local parts kept in a dict.

    Payloads are the serialised bytes (decoded on the "client"), so nothing is shared by reference and
    the byte counts are those of the messages.
    """

    engine = "in-process"

    def __init__(self, task: FederatedTask, policy: SharePolicy, seed: int) -> None:
        self.task, self.policy, self.seed = task, policy, seed
        self.local: dict[int, State] = {}
        self.sent_names: list[list[str]] = []  # names of every array a client sent (for tests)

    def client_ids(self) -> list[int]:
        return list(range(self.task.num_clients))

    def fit(self, round_, cids, payload, proximal_mu):
        incoming = decode_state(payload)
        replies: dict[int, FitReply | str] = {}
        for cid in cids:
            reply, kept = client_train(self.task, self.policy, cid, incoming, self.local.get(cid), round_,
                                       self.seed, proximal_mu)
            wire = encode_state(reply.shared)
            self.sent_names.append(list(wire))
            reply.shared = decode_state(wire)
            reply.bytes_up = payload_bytes(wire)
            self.local[cid] = kept
            replies[cid] = reply
        return replies

    def evaluate(self, round_, cids, payload):
        incoming = decode_state(payload)
        return {cid: client_evaluate(self.task, cid, incoming, self.local.get(cid), round_) for cid in cids}


# --------------------------------------------------------------------------- the server

def check_run(rounds: int, evaluate_every: int) -> None:
    if not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise FLRunError(f"rounds must be an integer >= 1, got {rounds!r}")
    if not isinstance(evaluate_every, (int, np.integer)) or evaluate_every < 0:
        raise FLRunError(f"evaluate_every must be an integer >= 0 (0 = only after the last round), got {evaluate_every!r}")


def run_rounds(task: FederatedTask, strategy: FedAvg, policy: SharePolicy, transport: Transport, rounds: int,
               seed: int = 0, evaluate_every: int = 1, keep_states: bool = False,
               log: Callable[[str], None] | None = None) -> FLHistory:
    """The server loop (see the module docstring). Never raises for a failed round: see ``status``."""
    check_run(rounds, evaluate_every)
    start = time.perf_counter()
    client_ids = sorted(transport.client_ids())
    history = FLHistory(strategy_to_dict(strategy), asdict(policy), int(rounds), int(seed), client_ids,
                        engine=transport.engine)
    shared, _ = policy.split(task.initial_state())
    history.final_state = {k: np.array(v, copy=True) for k, v in shared.items()}
    server_eval = getattr(task, "server_evaluate", None)

    def evaluate(round_: int, payload: dict[str, bytes], state: State) -> dict[str, Any]:
        results = transport.evaluate(round_, client_ids, payload)
        for cid in client_ids:
            res = results.get(cid, "no reply")
            if isinstance(res, str):
                history.failures.append({"round": round_, "client": cid, "phase": "evaluate", "reason": res})
            else:
                history.evaluations.append({"round": round_, "client": cid, **res})
        return dict(server_eval(state, round_)) if server_eval is not None else {}

    if evaluate_every:
        history.server.append({"round": 0, "round_seconds": 0.0, "bytes_down": 0, "bytes_up": 0, "clients": 0,
                               **evaluate(0, encode_state(shared), shared)})
    if keep_states:
        history.states[0] = history.final_state
    for round_ in range(1, rounds + 1):
        t0 = time.perf_counter()
        cids = strategy.sample(client_ids, round_, seed)
        payload = encode_state(shared)
        down = payload_bytes(payload)
        replies = transport.fit(round_, cids, payload, strategy.proximal_mu)
        good = []
        for cid in cids:
            reply = replies.get(cid, "no reply within the round timeout")
            if isinstance(reply, str):
                history.failures.append({"round": round_, "client": cid, "phase": "fit", "reason": reply})
                continue
            good.append((cid, reply))
            history.fit.append({"round": round_, "client": cid, "bytes_down": down, "bytes_up": reply.bytes_up,
                                "fit_seconds": reply.seconds, "num_examples": reply.num_examples, **reply.metrics})
        needed = max(1, strategy.min_fit_clients)
        if len(good) < needed:
            history.status = (f"round {round_} failed: {len(good)} of {len(cids)} sampled clients replied, "
                              f"min_fit_clients={strategy.min_fit_clients}; kept the global model of round "
                              f"{round_ - 1}")
            if log:
                log(history.status)
            break
        if shared:
            try:
                shared = strategy.aggregate([(cid, r.shared, r.num_examples) for cid, r in good])
            except StrategyError as err:
                history.status = f"round {round_} failed: {err}; kept the global model of round {round_ - 1}"
                break
        history.final_state = {k: np.array(v, copy=True) for k, v in shared.items()}
        history.completed_rounds = round_
        if keep_states:
            history.states[round_] = history.final_state
        row = {"round": round_, "bytes_down": down * len(cids), "bytes_up": sum(r.bytes_up for _, r in good),
               "clients": len(good)}
        if evaluate_every and (round_ % evaluate_every == 0) or round_ == rounds:
            row.update(evaluate(round_, encode_state(shared), shared))
        row["round_seconds"] = time.perf_counter() - t0
        history.server.append(row)
        if log:
            log(f"round {round_}/{rounds}: {len(good)} clients, {row['bytes_up']} bytes up")
    history.seconds = time.perf_counter() - start
    return history


def simulate(task: FederatedTask | TaskSpec, strategy: FedAvg | str = "fedavg", rounds: int = 3,
             policy: SharePolicy | None = None, seed: int = 0, evaluate_every: int = 1,
             keep_states: bool = False, raise_on_failure: bool = True,
             log: Callable[[str], None] | None = None) -> FLHistory:
    """Run ``rounds`` rounds in this process (deterministic; the smoke profile's engine)."""
    from fmbook.core.fl.strategy import make_strategy

    check_run(rounds, evaluate_every)
    strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
    policy = policy or SharePolicy()
    built = resolve_task(task)
    history = run_rounds(built, strategy, policy, InProcessTransport(built, policy, seed), rounds, seed,
                         evaluate_every, keep_states, log)
    if raise_on_failure and not history.ok:
        raise FLRoundError(history.status, history)
    return history


def policy_from_dict(data: Mapping[str, Any]) -> SharePolicy:
    shared = data.get("shared")
    return SharePolicy(local=tuple(data.get("local", ())), shared=None if shared is None else tuple(shared))


__all__ = ["FLHistory", "FLRoundError", "FLRunError", "FederatedTask", "FitReply", "InProcessTransport",
           "TaskSpec", "Transport", "client_evaluate", "client_train", "policy_from_dict", "run_rounds",
           "simulate", "strategy_from_dict"]
