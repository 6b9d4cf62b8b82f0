"""The same loop on Flower: a ``ServerApp`` and a ``ClientApp`` built from the core's objects.

The ``ServerApp``'s ``main`` runs :func:`fmbook.core.fl.loop.run_rounds` with :class:`FlowerTransport`,
which sends Flower messages (``train`` / ``evaluate`` / ``query``) through the ``Grid``; the
``ClientApp`` answers them with :func:`~fmbook.core.fl.loop.client_train` /
:func:`~fmbook.core.fl.loop.client_evaluate` and keeps its local parameters in its ``Context.state``
(they never enter a message). The task is built on each side from a :class:`~fmbook.core.fl.loop.TaskSpec`.

* :func:`run_flower_simulation` -- Flower's simulation engine (Ray, one actor per CPU share);
  the history comes back in this process. :func:`run_flower_batch` runs several runs in one
  simulation (Ray and the actors start once; each run keeps its own client state).
* deployment engine -- :func:`write_flower_app` writes a Flower App folder whose components are this
  module's ``server_app`` and ``client_app`` and whose run config (``fmbook-run``) carries the run as
  JSON; start ``flower-superlink --insecure``, one ``flower-supernode --insecure --node-config
  "partition-id=K num-partitions=N"`` per client, then ``flwr run <folder> <connection>``. The
  ``ServerApp`` writes the history to ``result-dir`` (``history.json``). See ``book/how_to_run.md``.

Bytes: the server counts ``len(Array.data)`` of every array it sends and receives (numpy ``.npy``
serialisation, as :func:`~fmbook.core.fl.strategy.payload_bytes`). Node ids are mapped to partition ids
with one ``query`` message per node before round 1 (not counted as training traffic).
Every wait is bounded: ``wait_for_nodes_s`` for the nodes to connect, ``round_timeout_s`` per round.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fmbook.core.fl.loop import (FitReply, FLHistory, FLRoundError, FLRunError, TaskSpec, check_run, client_evaluate,
                                 client_train, policy_from_dict, run_rounds)
from fmbook.core.fl.strategy import (FedAvg, SharePolicy, State, decode_state, make_strategy, strategy_from_dict,
                                     strategy_to_dict)

LOCAL_KEY = "fmbook.local"
RUN_CONFIG_KEY = "fmbook-run"
log = logging.getLogger("fmbook.fl")


@dataclass(frozen=True)
class FlowerRun:
    """A federated run as plain data (travels to Ray actors, and as JSON in a Flower App's run config)."""

    task: dict[str, Any]  # TaskSpec.to_dict()
    strategy: dict[str, Any]
    policy: dict[str, Any] = field(default_factory=lambda: {"local": [], "shared": None})
    rounds: int = 3
    seed: int = 0
    evaluate_every: int = 1
    keep_states: bool = False
    round_timeout_s: float = 120.0
    wait_for_nodes_s: float = 60.0
    result_dir: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FlowerRun":
        return cls(**json.loads(text))

    def spec(self) -> TaskSpec:
        return TaskSpec(self.task["factory"], self.task.get("kwargs", {}))


# --------------------------------------------------------------------------- records

def state_to_record(state: Mapping[str, np.ndarray]):
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({name: Array.from_numpy_ndarray(np.asarray(value)) for name, value in state.items()})


def record_to_state(record) -> State:
    return {name: array.numpy() for name, array in record.items()}


def record_bytes(record) -> int:
    """Serialised bytes of the arrays in an ``ArrayRecord`` (``sum(len(array.data))``)."""
    return int(sum(len(array.data) for array in record.values()))


# --------------------------------------------------------------------------- the client

def _client_handler(runs: Sequence[FlowerRun], message, context):
    """Answer one message (``query``, ``train`` or ``evaluate``) of run ``config["run_index"]``."""
    from flwr.app import ConfigRecord, Message, RecordDict

    pid = int(context.node_config["partition-id"])
    kind = message.metadata.message_type
    if kind.startswith("query"):
        return Message(RecordDict({"info": ConfigRecord({"partition-id": pid})}), reply_to=message)
    config = message.content["config"]
    index = int(config["run_index"])
    run = runs[index]
    task = run.spec().build()
    policy = policy_from_dict(run.policy)
    incoming = record_to_state(message.content["global"])
    key = f"{LOCAL_KEY}.{index}"  # each run of a batch keeps its own local parameters
    local = record_to_state(context.state[key]) if key in context.state else None
    if kind.startswith("train"):
        reply, kept = client_train(task, policy, pid, incoming, local, int(config["round"]), int(config["seed"]),
                                   float(config["proximal_mu"]))
        context.state[key] = state_to_record(kept)
        metrics = {"num_examples": reply.num_examples, "fit_seconds": reply.seconds, **reply.metrics}
        return Message(RecordDict({"update": state_to_record(reply.shared), "metrics": ConfigRecord(metrics)}),
                       reply_to=message)
    metrics = client_evaluate(task, pid, incoming, local, int(config["round"]))
    return Message(RecordDict({"metrics": ConfigRecord(metrics)}), reply_to=message)


def make_client_app(run: FlowerRun | Sequence[FlowerRun] | None = None):
    """A ``ClientApp`` for one run or a batch of runs; with ``run=None`` it reads the run from the run
    config (deployment)."""
    runs = [run] if isinstance(run, FlowerRun) else (list(run) if run is not None else None)
    from flwr.clientapp import ClientApp

    app = ClientApp()

    def handle(message, context):
        return _client_handler(runs or [FlowerRun.from_json(str(context.run_config[RUN_CONFIG_KEY]))], message,
                               context)

    app.train()(handle)
    app.evaluate()(handle)
    app.query()(handle)
    return app


# --------------------------------------------------------------------------- the server

class FlowerTransport:
    """Requests and replies as Flower messages through a ``Grid`` (bounded waits)."""

    def __init__(self, grid, run: FlowerRun, num_clients: int, nodes: Mapping[int, int] | None = None,
                 run_index: int = 0) -> None:
        self.grid, self.run, self.engine, self.run_index = grid, run, "flower", run_index
        self.nodes = dict(nodes) if nodes is not None else self._map_nodes(num_clients)
        self.nodes = {pid: node for pid, node in self.nodes.items() if pid < num_clients}

    def _send(self, kind: str, round_: int, node_pids: Mapping[int, int], content_fn) -> dict[int, Any]:
        from flwr.app import Message

        live = set(self.grid.get_node_ids())
        out: dict[int, Any] = {pid: "node offline (not connected to the SuperLink)"
                               for node, pid in node_pids.items() if node not in live}
        messages = [Message(content_fn(), dst_node_id=node, message_type=kind, group_id=str(round_),
                            ttl=max(self.run.round_timeout_s, 1.0))
                    for node in node_pids if node in live]
        replies = self.grid.send_and_receive(messages, timeout=self.run.round_timeout_s) if messages else []
        for reply in replies:
            pid = node_pids.get(reply.metadata.src_node_id)
            if pid is None:
                continue
            out[pid] = f"client error: {reply.error.reason}" if reply.has_error() else reply
        return out

    def _map_nodes(self, num_clients: int) -> dict[int, int]:
        """Wait (bounded) for ``num_clients`` nodes, then ask each for its partition id."""
        from flwr.app import RecordDict

        deadline = time.monotonic() + self.run.wait_for_nodes_s
        while len(nodes := list(self.grid.get_node_ids())) < num_clients:
            if time.monotonic() > deadline:
                raise FLRunError(f"only {len(nodes)} of {num_clients} SuperNodes connected within "
                                 f"{self.run.wait_for_nodes_s} s (wait_for_nodes_s)")
            time.sleep(0.2)
        from flwr.app import Message

        # the first message starts each node's ClientApp (imports, data): it gets the nodes' wait too
        first_contact = max(self.run.round_timeout_s, self.run.wait_for_nodes_s, 1.0)
        queries = [Message(RecordDict(), dst_node_id=node, message_type="query", group_id="0",
                           ttl=first_contact) for node in nodes]
        mapping: dict[int, int] = {}
        for msg in self.grid.send_and_receive(queries, timeout=first_contact):
            if not msg.has_error():
                mapping[int(msg.content["info"]["partition-id"])] = msg.metadata.src_node_id
        missing = sorted(set(range(num_clients)) - set(mapping))
        if missing:
            raise FLRunError(f"no SuperNode answered for partition ids {missing}; start one per partition with "
                             f"--node-config 'partition-id=K num-partitions={num_clients}'")
        return mapping  # partition id -> node id

    def client_ids(self) -> list[int]:
        return sorted(self.nodes)

    def _content(self, payload: Mapping[str, bytes], round_: int, proximal_mu: float = 0.0):
        from flwr.app import ConfigRecord, RecordDict

        return RecordDict({"global": state_to_record(decode_state(payload)),
                           "config": ConfigRecord({"round": round_, "seed": self.run.seed, "run_index": self.run_index,
                                                   "proximal_mu": float(proximal_mu)})})

    def fit(self, round_, cids, payload, proximal_mu):
        nodes = {self.nodes[c]: c for c in cids}
        replies = self._send("train", round_, nodes, lambda: self._content(payload, round_, proximal_mu))
        out: dict[int, FitReply | str] = {}
        for cid, reply in replies.items():
            if isinstance(reply, str):
                out[cid] = reply
                continue
            record = reply.content["update"]
            metrics = dict(reply.content["metrics"])
            n = int(metrics.pop("num_examples"))
            seconds = float(metrics.pop("fit_seconds"))
            out[cid] = FitReply(record_to_state(record), n, {k: float(v) for k, v in metrics.items()}, seconds,
                                record_bytes(record))
        return out

    def evaluate(self, round_, cids, payload):
        nodes = {self.nodes[c]: c for c in cids}
        replies = self._send("evaluate", round_, nodes, lambda: self._content(payload, round_))
        return {cid: (r if isinstance(r, str) else {k: float(v) for k, v in r.content["metrics"].items()})
                for cid, r in replies.items()}


def _server_main(runs: Sequence[FlowerRun], grid, sink: dict | None) -> list[FLHistory]:
    """Run the batch in order over the same SuperNodes (mapped to partition ids once)."""
    histories = []
    nodes = None
    for index, run in enumerate(runs):
        strategy = strategy_from_dict(run.strategy)
        policy = policy_from_dict(run.policy)
        task = run.spec().build()
        try:
            if nodes is None:
                needed = max(r.spec().build().num_clients for r in runs)
                nodes = FlowerTransport(grid, run, needed).nodes
            transport = FlowerTransport(grid, run, task.num_clients, nodes, index)
            history = run_rounds(task, strategy, policy, transport, run.rounds, run.seed, run.evaluate_every,
                                 run.keep_states, log=log.info)
        except FLRunError as err:
            history = FLHistory(strategy_to_dict(strategy), asdict(policy), run.rounds, run.seed, [],
                                engine="flower", status=f"failed before round 1: {err}")
        history.engine = "flower"
        histories.append(history)
        if run.result_dir:
            save_history(history, Path(run.result_dir))
    if sink is not None:
        sink["histories"] = histories
    return histories


def make_server_app(run: FlowerRun | Sequence[FlowerRun] | None = None, sink: dict | None = None):
    """A ``ServerApp`` for one run or a batch; with ``run=None`` it reads the run from the run config
    (deployment). ``sink`` (a dict, same process only) receives ``sink["histories"]``."""
    from flwr.serverapp import ServerApp

    runs = [run] if isinstance(run, FlowerRun) else (list(run) if run is not None else None)
    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        _server_main(runs or [FlowerRun.from_json(str(context.run_config[RUN_CONFIG_KEY]))], grid, sink)

    return app


def save_history(history: FLHistory, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "history.json"
    tmp = folder / f".history.{os.getpid()}.json"
    tmp.write_text(json.dumps(history.to_json()))
    tmp.replace(path)
    return path


def load_history(folder: str | Path) -> FLHistory:
    return FLHistory.from_json(json.loads((Path(folder) / "history.json").read_text()))


#: Module-level apps for the deployment engine (the run comes from the run config ``fmbook-run``).
server_app = make_server_app()
client_app = make_client_app()


# --------------------------------------------------------------------------- simulation engine

def make_run(task: TaskSpec, strategy: FedAvg | str, rounds: int, policy: SharePolicy | None = None, seed: int = 0,
             evaluate_every: int = 1, keep_states: bool = False, round_timeout_s: float = 120.0,
             wait_for_nodes_s: float = 60.0, result_dir: str = "") -> FlowerRun:
    check_run(rounds, evaluate_every)
    if not isinstance(task, TaskSpec):
        raise FLRunError("Flower needs a TaskSpec (a task is rebuilt in every process), got "
                         f"{type(task).__name__}")
    strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
    policy = policy or SharePolicy()
    return FlowerRun(task.to_dict(), strategy_to_dict(strategy),
                     {"local": list(policy.local), "shared": None if policy.shared is None else list(policy.shared)},
                     int(rounds), int(seed), int(evaluate_every), keep_states, float(round_timeout_s),
                     float(wait_for_nodes_s), result_dir)


def quiet_flower() -> None:
    """Send Flower's and Ray's chatter to the log file level WARNING (no stderr noise in notebooks)."""
    import warnings

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_LOG_TO_STDERR", "0")
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="ray")
    warnings.filterwarnings("ignore", message=".*deprecated.*", category=DeprecationWarning)


def run_flower_simulation(task: TaskSpec, strategy: FedAvg | str = "fedavg", rounds: int = 3,
                          policy: SharePolicy | None = None, seed: int = 0, evaluate_every: int = 1,
                          keep_states: bool = False, num_cpus: int | None = None, cpus_per_client: float = 1.0,
                          round_timeout_s: float = 600.0, raise_on_failure: bool = True,
                          quiet: bool = True) -> FLHistory:
    """Run on Flower's simulation engine (Ray) and return the history (same fields as :func:`simulate`).

    ``num_cpus`` caps Ray (default: ``min(2, os.cpu_count())``, so it starts on a small machine);
    ``cpus_per_client`` is each ClientApp actor's share (``client_resources.num_cpus``).
    """
    run = make_run(task, strategy, rounds, policy, seed, evaluate_every, keep_states, round_timeout_s)
    return run_flower_batch([run], num_cpus, cpus_per_client, raise_on_failure, quiet)[0]


def run_flower_batch(runs: Sequence[FlowerRun], num_cpus: int | None = None, cpus_per_client: float = 1.0,
                     raise_on_failure: bool = True, quiet: bool = True) -> list[FLHistory]:
    """Several runs (:func:`make_run`) one after another in ONE Flower simulation: Ray and the ClientApp
    actors start once. Each run keeps its own local client state; node ``k`` is client ``k`` of every run."""
    from flwr.simulation import run_simulation

    runs = list(runs)
    if not runs:
        raise FLRunError("run_flower_batch needs at least one run")
    num_clients = max(r.spec().build().num_clients for r in runs)
    sink: dict[str, Any] = {}
    num_cpus = int(num_cpus or min(2, os.cpu_count() or 1))
    backend = {"client_resources": {"num_cpus": float(cpus_per_client), "num_gpus": 0.0},
               "init_args": {"num_cpus": num_cpus, "num_gpus": 0, "include_dashboard": False,
                             "log_to_driver": not quiet, "logging_level": logging.ERROR if quiet else logging.INFO}}
    if quiet:
        quiet_flower()
    run_simulation(make_server_app(runs, sink), make_client_app(runs), num_supernodes=num_clients,
                   backend_config=backend, verbose_logging=not quiet)
    histories = sink.get("histories")
    if not histories or len(histories) != len(runs):
        raise FLRoundError("the Flower simulation ended without every history (see the log)",
                           FLHistory(runs[0].strategy, runs[0].policy, runs[0].rounds, runs[0].seed, [],
                                     engine="flower-simulation", status="no history"))
    for history in histories:
        history.engine = "flower-simulation"
        if raise_on_failure and not history.ok:
            raise FLRoundError(history.status, history)
    return histories


# --------------------------------------------------------------------------- deployment engine

def write_flower_app(folder: str | Path, run: FlowerRun, name: str = "fmbook-fl") -> Path:
    """A Flower App folder (``pyproject.toml``) whose components are this module's apps and whose run
    config ``fmbook-run`` holds ``run`` as JSON. ``flwr run <folder> <connection>`` submits it."""
    import tomli_w

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    project = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": name, "version": "1.0.0", "description": "fmbook federated run",
                    "license": "MIT", "dependencies": []},
        "tool": {"hatch": {"build": {"targets": {"wheel": {"packages": ["."]}}}},
                 "flwr": {"app": {"publisher": "fmbook",
                                  "components": {"serverapp": "fmbook.core.fl.flower:server_app",
                                                 "clientapp": "fmbook.core.fl.flower:client_app"},
                                  "config": {RUN_CONFIG_KEY: run.to_json()}}}},
    }
    (folder / "pyproject.toml").write_text(tomli_w.dumps(project))
    return folder
