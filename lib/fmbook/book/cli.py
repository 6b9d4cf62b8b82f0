"""``python -m fmbook``: run notebooks, build the book, show parameters, fetch assets, bench the LM engine."""

from __future__ import annotations

import argparse
import sys

import yaml

from fmbook.core import assets

from fmbook.book import profiles


def _parse_overrides(pairs: list[list[str]] | None) -> dict:
    overrides = {}
    for name, raw in pairs or []:
        overrides[name] = yaml.safe_load(raw)  # as papermill's -p: 3 -> int, 0.1 -> float, [0, 1] -> list
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fmbook", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute chapters' notebooks with papermill at a profile")
    run.add_argument("targets", nargs="*", metavar="CHAPTER[/NOTEBOOK]", help="default: every chapter")
    run.add_argument("--profile", default="local", help=f"one of {', '.join(profiles.PROFILES)} (default: local)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="override a parameter (YAML value) in every selected notebook that declares it")
    run.add_argument("-j", "--jobs", type=int, default=1, help="chapters executed in parallel")
    run.add_argument("--force", action="store_true", help="re-run notebooks even if nothing changed")

    book = sub.add_parser("book", help="build the HTML book from the executed notebooks")
    book.add_argument("--profile", default="local", help="whose executed notebooks to publish")

    params = sub.add_parser("params", help="a notebook's parameters, types, defaults and profile values")
    params.add_argument("target", metavar="CHAPTER/NOTEBOOK")

    sub.add_parser("list", help="chapters and their notebooks")

    fetch = sub.add_parser("fetch", help="fetch offline assets into the cache (with checksums)")
    fetch.add_argument("names", nargs="*", help=f"default: all ({', '.join(assets.ASSETS)})")
    fetch.add_argument("--force", action="store_true")

    sub.add_parser("status", help="print the reproduction status table from the results files")

    bench = sub.add_parser("bench", help="time the book's language-model engine against plain transformers")
    bench.add_argument("what", choices=["lm"], help="what to benchmark (lm: greedy generation)")
    bench.add_argument("--model", action="append", help="offline asset name, model folder or hub id "
                       "(repeatable; default: both offline models)")
    bench.add_argument("--items", type=int, default=0, help="test items per (mode, task, condition) of the "
                       "fixed set (0: all 8)")
    bench.add_argument("--batch-size", type=int, default=32)
    bench.add_argument("--blocks", type=int, default=4, help="interleaved blocks (settings alternate in each)")
    bench.add_argument("--threads", type=int, default=2, help="torch threads")
    bench.add_argument("--levers", action="store_true", help="also time each lever apart (float32 engine, "
                       "bfloat16 generate, CTranslate2 int8)")
    bench.add_argument("--profile", default="local", help="results/bench/<profile>/ (default: local)")
    return parser


def _bench(args) -> int:
    from fmbook.book.results import provenance
    from fmbook.core import lm_bench

    for name in args.model or list(lm_bench.DEFAULT_MODELS):
        record = lm_bench.bench_model(name, items=args.items or None, batch_size=args.batch_size,
                                      n_blocks=args.blocks, levers=args.levers, threads=args.threads)
        path = lm_bench.write_result(record, profile=args.profile, provenance=provenance())
        print(f"{name}: {record['prompts']} prompts ({record['modes']['zero-shot']} zero-shot, "
              f"{record['modes']['few-shot']} few-shot), threads {record['threads']}")
        for s in record["settings"]:
            print(f"  {s['setting']:<34} {s['prompts_per_s']:7.2f} prompts/s  x{s['speedup']:5.2f}  "
                  f"identical to reference {100 * s['identical_to_reference']:5.1f}%")
        for label, why in record["notes"].items():
            print(f"  {label}: not run ({why})")
        print(f"  engine / reference = {record['ratio']:.2f}x, identical answers "
              f"{100 * record['identical']:.1f}%  -> {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            from fmbook.book.runner import run

            outcomes = run(args.targets, profile=args.profile, overrides=_parse_overrides(args.parameter),
                           jobs=args.jobs, force=args.force)
            return 0 if all(o.status in ("ran", "skipped") for o in outcomes) else 1
        if args.command == "book":
            from fmbook.book.build import build

            html = build(profile=args.profile)
            print(f"The book is at {html / 'index.html'}")
            return 0
        if args.command == "params":
            chapter, notebook = profiles.parse_target(args.target)
            for nb in [notebook] if notebook else profiles.list_notebooks(chapter):
                print(profiles.describe(chapter, nb) + "\n")
            return 0
        if args.command == "list":
            for chapter in profiles.list_chapters():
                print(chapter)
                for nb in profiles.list_notebooks(chapter):
                    print(f"  {nb}")
            return 0
        if args.command == "fetch":
            for name in args.names or list(assets.ASSETS):
                assets.fetch(name, force=args.force)
            return 0
        if args.command == "bench":
            return _bench(args)
        if args.command == "status":
            from fmbook.book.status import status_rows

            for row in status_rows():
                print(" | ".join(str(v) for v in row.values()))
            return 0
    except (profiles.ParameterError, assets.AssetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 2
