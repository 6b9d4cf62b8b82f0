"""Flower's deployment engine on one machine: a SuperLink and SuperNodes as separate processes.

:class:`LocalFederation` starts ``flower-superlink --insecure`` and one ``flower-supernode --insecure``
per partition (``--node-config "partition-id=K num-partitions=N"``) on free loopback ports, writes a
Flower configuration (``FLWR_HOME/config.toml``) naming the SuperLink's Control API, and submits runs
with ``flwr run <app> <connection>``. Every process gets its own session, so :meth:`stop_node` and
:meth:`close` end it with its children (the ClientApp subprocesses). Used by the tests and by
``book/how_to_run.md``'s walk-through; on several machines run the same commands by hand.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from fmbook.core.fl.flower import FlowerRun, load_history, write_flower_app
from fmbook.core.fl.loop import FLHistory, FLRunError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


class LocalFederation:
    """A SuperLink and ``num_nodes`` SuperNodes on 127.0.0.1 (use as a context manager)."""

    def __init__(self, workdir: str | Path, num_nodes: int, env: dict[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.num_nodes = num_nodes
        self.env = {**os.environ, **(env or {}), "FLWR_HOME": str(self.workdir / "flwr-home")}
        # the SuperLink and SuperNodes start helpers (flower-superexec, flwr-serverapp, flwr-clientapp)
        # by name: this Python's scripts folder goes first on PATH
        self.env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + self.env.get("PATH", "")
        # Flower 1.42: one HTTP server on --host/--port carries the Fleet, Control and Runtime APIs
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            cwd=self.workdir, start_new_session=True)

    def start(self) -> "LocalFederation":
        home = Path(self.env["FLWR_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')
        self._start("superlink", [_bin("flower-superlink"), "--insecure", "--database", ":flwr-in-memory:",
                                  "--host", "127.0.0.1", "--port", str(self.port)])
        self.wait_for_port(self.port, 60)
        for k in range(self.num_nodes):
            self._start(f"supernode-{k}", [_bin("flower-supernode"), "--insecure",
                                           "--superlink", f"127.0.0.1:{self.port}",
                                           "--node-config", f"partition-id={k} num-partitions={self.num_nodes}",
                                           "--host", "127.0.0.1", "--port", str(free_port())])
        return self

    def wait_for_port(self, port: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise FLRunError(f"the SuperLink did not open port {port} within {timeout_s} s; "
                                 f"see {self.workdir / 'superlink.log'}")
            if self.procs["superlink"].poll() is not None:
                raise FLRunError(f"the SuperLink exited; see {self.workdir / 'superlink.log'}")
            time.sleep(0.2)

    def __enter__(self) -> "LocalFederation":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, run: FlowerRun, app_dir: str | Path | None = None, timeout_s: float = 60.0) -> None:
        """``flwr run <app> loopback`` (returns once the run is submitted)."""
        app = write_flower_app(app_dir or self.workdir / "app", run)
        done = subprocess.run([_bin("flwr"), "run", str(app), "loopback"], env=self.env, cwd=self.workdir,
                              capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise FLRunError(f"flwr run failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")

    def wait_for_history(self, result_dir: str | Path, timeout_s: float) -> FLHistory:
        path = Path(result_dir) / "history.json"
        deadline = time.monotonic() + timeout_s
        while not path.is_file():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no history within {timeout_s} s; logs in {self.workdir}")
            dead = [n for n, p in self.procs.items() if n == "superlink" and p.poll() is not None]
            if dead:
                raise FLRunError(f"the SuperLink exited; see {self.workdir / 'superlink.log'}")
            time.sleep(0.3)
        return load_history(result_dir)

    def stop_node(self, k: int) -> None:
        """Kill SuperNode ``k`` and its ClientApp subprocesses (SIGKILL to its session)."""
        proc = self.procs[f"supernode-{k}"]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
