"""Strategies (FedAvg, FedProx), what is shared vs kept local, and the bytes a state costs on the wire.

* :class:`FedAvg` -- McMahan et al. (2017), Algorithm 1: the new global value of every *shared*
  parameter is the mean of the clients' values, weighted by their number of training examples
  (``weighted=True``) or equal weights (``weighted=False``, as FedCLIP's server does).
* :class:`FedProx` -- Li et al. (2020), Eq. 2: the same aggregation; each client minimises
  ``F_k(w) + mu/2 * ||w - w_t||^2`` with ``w_t`` the global model it received
  (:func:`proximal_penalty` is that term; a task adds it to its loss when ``config.proximal_mu > 0``).
* :class:`SharePolicy` -- which parameters travel. Names matching ``local`` patterns (``fnmatch``) never
  leave the client; if ``shared`` patterns are given, only matching names travel. An empty ``shared``
  tuple (the default ``None`` means "everything not local") shares nothing: purely local training.
* :func:`encode_state` / :func:`payload_bytes` -- a state is serialised array by array exactly as
  Flower's :class:`flwr.app.Array` does (``numpy.save``, no pickle); the byte count of a message is the
  sum of those serialised lengths (Flower's ``ArrayRecord.count_bytes()`` minus the key names).
"""

from __future__ import annotations

import fnmatch
import io
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

State = dict[str, np.ndarray]


class StrategyError(ValueError):
    """An unknown strategy name or an impossible setting (the message lists what is allowed)."""


# --------------------------------------------------------------------------- what travels

@dataclass(frozen=True)
class SharePolicy:
    """Which parameters are sent to the server (``fnmatch`` patterns over state-dict names).

    ``local``: names kept on the client (personalised parameters). ``shared``: if not ``None``, only
    names matching one of these patterns are sent (``()`` = nothing is sent). Local beats shared.
    """

    local: tuple[str, ...] = ()
    shared: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "local", tuple(self.local))
        if self.shared is not None:
            object.__setattr__(self, "shared", tuple(self.shared))

    def is_shared(self, name: str) -> bool:
        if any(fnmatch.fnmatchcase(name, p) for p in self.local):
            return False
        if self.shared is None:
            return True
        return any(fnmatch.fnmatchcase(name, p) for p in self.shared)

    def split(self, state: Mapping[str, np.ndarray]) -> tuple[State, State]:
        """``(shared, local)`` parts of ``state`` (same arrays, insertion order kept)."""
        shared, local = {}, {}
        for name, value in state.items():
            (shared if self.is_shared(name) else local)[name] = value
        return shared, local

    def describe(self) -> str:
        if self.shared == ():
            return "nothing shared (local training only)"
        parts = []
        if self.shared is not None:
            parts.append("shared: " + ", ".join(self.shared))
        if self.local:
            parts.append("kept local: " + ", ".join(self.local))
        return "; ".join(parts) or "everything shared"


# --------------------------------------------------------------------------- serialisation

def encode_array(array: np.ndarray) -> bytes:
    """The bytes Flower puts on the wire for one array (``flwr.app.Array.from_numpy_ndarray``)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def decode_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_state(state: Mapping[str, np.ndarray]) -> dict[str, bytes]:
    return {name: encode_array(value) for name, value in state.items()}


def decode_state(payload: Mapping[str, bytes]) -> State:
    return {name: decode_array(data) for name, data in payload.items()}


def payload_bytes(state: Mapping[str, np.ndarray] | Mapping[str, bytes]) -> int:
    """Serialised size of a state (sum over arrays of the ``numpy.save`` bytes)."""
    return int(sum(len(v) if isinstance(v, (bytes, bytearray)) else len(encode_array(v)) for v in state.values()))


def tensor_bytes(state: Mapping[str, np.ndarray]) -> int:
    """Raw tensor bytes (``sum(a.nbytes)``): the payload without numpy's per-array header."""
    return int(sum(np.asarray(v).nbytes for v in state.values()))


def num_parameters(state: Mapping[str, np.ndarray]) -> int:
    return int(sum(np.asarray(v).size for v in state.values()))


# --------------------------------------------------------------------------- FedProx's term

def proximal_penalty(params: Mapping[str, Any], anchor: Mapping[str, Any], mu: float):
    """``mu/2 * sum_k ||w_k - w_t,k||^2`` over the names present in ``anchor`` (torch tensors).

    ``params`` are the live parameters (``dict(model.named_parameters())``); ``anchor`` the global values
    received this round (numpy or torch; parameters not in ``anchor``, e.g. local ones, are free).
    Its gradient with respect to ``w_k`` is ``mu * (w_k - w_t,k)`` (FedProx, Eq. 2).
    """
    import torch

    total = None
    for name, value in anchor.items():
        if name not in params:
            continue
        w = params[name]
        ref = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value,
                              dtype=w.dtype, device=w.device)
        term = (w - ref.detach()).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return 0.5 * float(mu) * total


def proximal_gradient(params: Mapping[str, np.ndarray], anchor: Mapping[str, np.ndarray], mu: float) -> State:
    """Gradient of :func:`proximal_penalty` in numpy: ``mu * (w - w_t)`` for the names in ``anchor``."""
    return {name: float(mu) * (np.asarray(params[name], np.float64) - np.asarray(anchor[name], np.float64))
            for name in anchor if name in params}


# --------------------------------------------------------------------------- strategies

@dataclass(frozen=True)
class FitConfig:
    """What a client gets with every training request."""

    round: int
    seed: int
    proximal_mu: float = 0.0
    anchor: Mapping[str, np.ndarray] = field(default_factory=dict)  # the global values just received


@dataclass(frozen=True)
class FedAvg:
    """Federated averaging (McMahan et al., 2017).

    ``fraction_fit``: share of the clients sampled each round (at least ``min_fit_clients``; seeded by
    the run's seed and the round). ``min_fit_clients``: fewest replies a round needs; with fewer, the
    round fails and the last good global model is kept. ``weighted``: weight clients by their training
    examples (``False``: equal weights).
    """

    fraction_fit: float = 1.0
    min_fit_clients: int = 1
    weighted: bool = True
    name: str = field(default="fedavg", init=False)

    def __post_init__(self) -> None:
        if not 0 < self.fraction_fit <= 1:
            raise StrategyError(f"fraction_fit must lie in (0, 1], got {self.fraction_fit}")
        if self.min_fit_clients < 1:
            raise StrategyError(f"min_fit_clients must be >= 1, got {self.min_fit_clients}")

    @property
    def proximal_mu(self) -> float:
        return 0.0

    def sample(self, client_ids: Sequence[int], round_: int, seed: int) -> list[int]:
        """The clients trained in ``round_`` (sorted); all of them when ``fraction_fit == 1``."""
        ids = sorted(int(c) for c in client_ids)
        k = max(self.min_fit_clients, int(np.ceil(self.fraction_fit * len(ids))))
        if k >= len(ids):
            return ids
        rng = np.random.default_rng([int(seed), int(round_), 7919])
        return sorted(int(c) for c in rng.choice(ids, size=k, replace=False))

    def aggregate(self, updates: Sequence[tuple[int, Mapping[str, np.ndarray], int]]) -> State:
        """Weighted mean of the clients' shared states, in client-id order (float64, cast back).

        ``updates``: ``(client_id, state, num_examples)``. Names must agree across clients. Integer
        arrays (counters) are averaged and rounded.
        """
        if not updates:
            raise StrategyError("nothing to aggregate: no client update")
        updates = sorted(updates, key=lambda u: u[0])
        names = list(updates[0][1])
        for cid, state, _ in updates:
            if list(state) != names:
                raise StrategyError(f"client {cid} sent parameters {sorted(state)}, expected {sorted(names)}")
        if self.weighted:
            weights = np.array([float(n) for _, _, n in updates])
            if (weights < 0).any() or weights.sum() <= 0:
                raise StrategyError(f"example counts must be >= 0 with a positive sum, got {weights.tolist()}")
        else:
            weights = np.ones(len(updates))
        weights = weights / weights.sum()
        out: State = {}
        for name in names:
            first = np.asarray(updates[0][1][name])
            acc = np.zeros(first.shape, dtype=np.float64)
            for w, (_, state, _) in zip(weights, updates):
                acc += w * np.asarray(state[name], dtype=np.float64)
            if np.issubdtype(first.dtype, np.integer) or first.dtype == np.bool_:
                acc = np.round(acc)
            out[name] = acc.astype(first.dtype)
        return out

    def describe(self) -> str:
        weights = "weighted by training examples" if self.weighted else "equal weights"
        return f"{self.name} ({weights}, fraction_fit={self.fraction_fit})"


@dataclass(frozen=True)
class FedProx(FedAvg):
    """FedProx (Li et al., 2020): FedAvg's aggregation, clients add ``mu/2 ||w - w_t||^2``."""

    mu: float = 0.01
    name: str = field(default="fedprox", init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.mu >= 0:
            raise StrategyError(f"FedProx mu must be >= 0, got {self.mu}")

    @property
    def proximal_mu(self) -> float:
        return float(self.mu)

    def describe(self) -> str:
        return super().describe() + f", mu={self.mu}"


STRATEGIES: dict[str, type[FedAvg]] = {"fedavg": FedAvg, "fedprox": FedProx}


def make_strategy(name: str, **options: Any) -> FedAvg:
    """A strategy by name (``fedavg`` or ``fedprox``) with its options."""
    key = str(name).lower()
    if key not in STRATEGIES:
        raise StrategyError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGIES)}")
    try:
        return STRATEGIES[key](**options)
    except TypeError as err:
        raise StrategyError(f"bad options for strategy {key!r}: {err}") from err


def strategy_to_dict(strategy: FedAvg) -> dict[str, Any]:
    out = {"name": strategy.name, "fraction_fit": strategy.fraction_fit,
           "min_fit_clients": strategy.min_fit_clients, "weighted": strategy.weighted}
    if isinstance(strategy, FedProx):
        out["mu"] = strategy.mu
    return out


def strategy_from_dict(spec: Mapping[str, Any]) -> FedAvg:
    spec = dict(spec)
    return make_strategy(spec.pop("name"), **spec)
