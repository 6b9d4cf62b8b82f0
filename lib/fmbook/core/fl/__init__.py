"""The book's federated core: client data, strategies, one loop, two engines (in-process and Flower).

Shared by the FedCLIP and ZooPFL chapters. The API below is stable; everything is importable from
``fmbook.core.fl``.

Data (:mod:`~fmbook.core.fl.data`)
    ``dirichlet_indices(labels, num_clients, alpha, seed, min_per_client=1)`` -> index arrays;
    ``label_skew_clients(data, num_clients, alpha, seed, fractions=(.6,.2,.2))`` and
    ``domain_clients(base, domains, seed, per_domain=None, fractions=(.6,.2,.2))`` -> ``list[ClientData]``
    (``.name``, ``.train``, ``.val``, ``.test``: :class:`~fmbook.core.datasets.ImageSet`); ``DOMAINS``
    (``original``, the style shifts of :mod:`fmbook.core.datasets`, ``digits``);
    ``holdings_table(clients)`` (long DataFrame: client, split, class, count) and ``plot_holdings``.

Strategies (:mod:`~fmbook.core.fl.strategy`)
    ``FedAvg(fraction_fit=1.0, min_fit_clients=1, weighted=True)``, ``FedProx(..., mu=0.01)``,
    ``make_strategy(name, **options)`` (names: ``STRATEGIES``); ``SharePolicy(local=patterns,
    shared=patterns|None)`` decides which state-dict names travel (personal ones never leave the client);
    ``proximal_penalty(params, anchor, mu)``; ``payload_bytes(state)`` (serialised ``.npy`` bytes, as
    Flower's ``Array``), ``tensor_bytes``, ``num_parameters``.

A task (what a method supplies; :class:`~fmbook.core.fl.loop.FederatedTask`)
    ``num_clients``; ``initial_state() -> dict[name, ndarray]``; ``fit(cid, state, config: FitConfig)
    -> (state, num_examples, metrics)`` (add ``proximal_penalty(params, config.anchor,
    config.proximal_mu)`` when ``config.proximal_mu > 0``); ``evaluate(cid, state, round) -> metrics``;
    optional ``server_evaluate(shared_state, round) -> metrics`` and ``client_names``. Built in each
    process from ``TaskSpec("module:factory", kwargs)`` (kwargs JSON-able).

Engines (same task, strategy and policy objects; same bytes; same numbers)
    ``simulate(task_or_spec, strategy, rounds, policy=None, seed=0, evaluate_every=1, keep_states=False)``
    -- in-process, deterministic (smoke). ``run_flower_simulation(spec, strategy, rounds, ...,
    num_cpus=None, cpus_per_client=1.0)`` -- Flower's simulation engine on Ray;
    ``run_flower_batch([make_run(...), ...])`` -- several runs in one simulation. Deployment:
    ``write_flower_app(folder, make_run(spec, strategy, rounds, ..., result_dir=...))`` then
    ``flower-superlink --insecure``, ``flower-supernode --insecure --superlink 127.0.0.1:9092
    --node-config "partition-id=K num-partitions=N" --port P``, ``flwr run <folder> <connection>``;
    read the result with ``load_history(result_dir)``.

Results: :class:`~fmbook.core.fl.loop.FLHistory` -- ``fit`` rows (round, client, bytes_down, bytes_up,
fit_seconds, num_examples, training metrics), ``evaluations`` rows (round, client, task metrics; round 0
is the initial model), ``server`` rows (round, round_seconds, bytes, server metrics), ``failures``,
``final_state`` (last good global shared state), ``states`` (per round, with ``keep_states``), ``status``
("ok" or why a round failed), and ``fit_frame()``, ``eval_frame()``, ``server_frame()``,
``bytes_per_round()``.

Errors: ``FLDataError``, ``StrategyError``, ``FLRunError`` (all ``ValueError``), ``FLRoundError``
(a round had fewer replies than ``min_fit_clients``; carries ``.history``).
"""

from fmbook.core.fl.data import (DOMAINS, ClientData, FLDataError, dirichlet_indices, domain_clients,
                                 holdings_table, label_skew_clients, make_domain, plot_holdings, split_client)
from fmbook.core.fl.loop import (FederatedTask, FitReply, FLHistory, FLRoundError, FLRunError, InProcessTransport,
                                 TaskSpec, client_evaluate, client_train, run_rounds, simulate)
from fmbook.core.fl.strategy import (STRATEGIES, FedAvg, FedProx, FitConfig, SharePolicy, StrategyError,
                                     decode_state, encode_state, make_strategy, num_parameters, payload_bytes,
                                     proximal_gradient, proximal_penalty, tensor_bytes)


def __getattr__(name: str):
    """Flower-dependent names load lazily (importing flwr takes a few seconds)."""
    if name in ("run_flower_simulation", "run_flower_batch", "write_flower_app", "make_run", "load_history", "make_server_app",
                "make_client_app", "FlowerRun", "save_history"):
        from fmbook.core.fl import flower

        return getattr(flower, name)
    raise AttributeError(f"module 'fmbook.core.fl' has no attribute {name!r}")


__all__ = ["DOMAINS", "ClientData", "FLDataError", "FLHistory", "FLRoundError", "FLRunError", "FederatedTask",
           "FedAvg", "FedProx", "FitConfig", "FitReply", "InProcessTransport", "STRATEGIES", "SharePolicy",
           "StrategyError", "TaskSpec", "client_evaluate", "client_train", "decode_state", "dirichlet_indices",
           "domain_clients", "encode_state", "holdings_table", "label_skew_clients", "make_domain", "make_strategy",
           "num_parameters", "payload_bytes", "plot_holdings", "proximal_gradient", "proximal_penalty", "run_rounds", "simulate",
           "split_client", "tensor_bytes", "run_flower_simulation", "run_flower_batch", "write_flower_app", "make_run", "load_history"]
