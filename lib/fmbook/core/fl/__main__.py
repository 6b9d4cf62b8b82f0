"""``python -m fmbook.core.fl write-app FOLDER ...``: a Flower App folder for the deployment engine.

Example (the toy task; a chapter's task works the same with its factory and JSON kwargs)::

    python -m fmbook.core.fl write-app /tmp/fl-app --task fmbook.core.fl.toy:make_toy_task \\
        --kwargs '{"num_clients": 3}' --strategy fedavg --rounds 3 --result-dir /tmp/fl-result
    flwr run /tmp/fl-app mylink

``python -m fmbook.core.fl show RESULT_DIR`` prints the history's rounds and failures.
"""

from __future__ import annotations

import argparse
import json
import sys

from fmbook.core.fl.loop import TaskSpec
from fmbook.core.fl.strategy import STRATEGIES, SharePolicy, make_strategy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fmbook.core.fl")
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write-app", help="write a Flower App folder (pyproject.toml) for `flwr run`")
    write.add_argument("folder")
    write.add_argument("--task", required=True, help="module:factory of the task")
    write.add_argument("--kwargs", default="{}", help="the factory's keyword arguments as JSON")
    write.add_argument("--strategy", default="fedavg", choices=sorted(STRATEGIES))
    write.add_argument("--mu", type=float, default=0.01, help="FedProx's mu")
    write.add_argument("--min-fit-clients", type=int, default=1)
    write.add_argument("--rounds", type=int, default=3)
    write.add_argument("--seed", type=int, default=0)
    write.add_argument("--local", nargs="*", default=[], help="patterns of parameters kept on the clients")
    write.add_argument("--round-timeout", type=float, default=300.0, help="seconds the server waits per round")
    write.add_argument("--wait-for-nodes", type=float, default=120.0, help="seconds to wait for the SuperNodes")
    write.add_argument("--result-dir", required=True, help="where the ServerApp writes history.json")
    show = sub.add_parser("show", help="summarise a history.json written by a run")
    show.add_argument("result_dir")
    args = parser.parse_args(argv)
    from fmbook.core.fl.flower import load_history, make_run, write_flower_app

    if args.command == "write-app":
        options = {"min_fit_clients": args.min_fit_clients}
        if args.strategy == "fedprox":
            options["mu"] = args.mu
        run = make_run(TaskSpec(args.task, json.loads(args.kwargs)), make_strategy(args.strategy, **options),
                       args.rounds, SharePolicy(local=tuple(args.local)), args.seed,
                       round_timeout_s=args.round_timeout, wait_for_nodes_s=args.wait_for_nodes,
                       result_dir=args.result_dir)
        print(write_flower_app(args.folder, run))
        return 0
    history = load_history(args.result_dir)
    print(f"status: {history.status}; rounds completed: {history.completed_rounds}/{history.rounds}")
    print(history.server_frame().to_string(index=False))
    for failure in history.failures:
        print("failure:", failure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
