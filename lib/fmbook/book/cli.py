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

    pdf = sub.add_parser("pdf", help="the whole book as one PDF (_build/book.pdf), printed by Chromium")
    pdf.add_argument("--profile", default="local", help="whose executed notebooks to print")

    params = sub.add_parser("params", help="a notebook's parameters, types, defaults and profile values")
    params.add_argument("target", metavar="CHAPTER/NOTEBOOK")

    sub.add_parser("list", help="chapters and their notebooks")

    fetch = sub.add_parser("fetch", help="fetch offline assets into the cache (with checksums)")
    fetch.add_argument("names", nargs="*", help=f"default: all ({', '.join(assets.ASSETS)})")
    fetch.add_argument("--force", action="store_true")

    sub.add_parser("status", help="print the reproduction status table from the results files")

    sync = sub.add_parser("sync", help="write each notebook's .ipynb from its MyST text (.md)")
    sync.add_argument("--check", action="store_true", help="only report pairs that differ (exit 1 if any)")

    cost = sub.add_parser("costs", help="time and disk of the last recorded runs (README's table)")
    cost.add_argument("--write", action="store_true", help="record them in book/costs.json and the README")
    cost.add_argument("--profile", default="local")

    grade = sub.add_parser("grade", help="run a student's edited notebook and compare it with the book's run")
    grade.add_argument("notebook", help="the student's .ipynb (or MyST .md) file")
    grade.add_argument("--profile", default="smoke", help="profile to execute at (default: smoke)")
    grade.add_argument("--tolerance", type=float, default=0.05, help="relative change of a metric that counts (0.05)")

    new = sub.add_parser("new-chapter", help="scaffold a chapter that builds and passes its tests at smoke")
    new.add_argument("name", help="chapter id: lower-case letters, digits and underscores")
    new.add_argument("--title", default="", help="the paper's title")
    bench = sub.add_parser("bench", help="time the book's language-model engine against plain transformers")
    bench.add_argument("what", choices=["lm"], help="what to benchmark (lm: greedy generation)")
    bench.add_argument("--model", action="append", help="offline asset name, model folder or hub id "
                       "(repeatable; default: both offline models)")
    bench.add_argument("--items", type=int, default=0, help="test items per (mode, task, condition) of the "
                       "fixed set (0: all 8)")
    bench.add_argument("--batch-size", type=int, default=32)
    bench.add_argument("--blocks", type=int, default=1, help="interleaved blocks (settings alternate in each; "
                       "more blocks are fairer on a busy machine but give smaller batches)")
    bench.add_argument("--threads", type=int, default=2, help="torch threads")
    bench.add_argument("--levers", action="store_true", help="also time each lever apart (float32 engine, int8 engine, "
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
            print(f"  {s['setting']:<34} {s['prompts_per_s']:7.2f} prompts/s  x{s['speedup']:5.2f} "
                  f"(CPU time x{s['cpu_speedup']:5.2f})  "
                  f"identical to reference {100 * s['identical_to_reference']:5.1f}%"
                  + (f"  accuracy {s['accuracy_accuracy']:.3f} ({s['accuracy_change']:+.3f} "
                     f"[{s['accuracy_low']:+.3f}, {s['accuracy_high']:+.3f}]: {s['accuracy_equivalent']})"
                     if "accuracy_change" in s else ""))
        for label, why in record["notes"].items():
            print(f"  {label}: not run ({why})")
        print(f"  engine / reference = {record['ratio']:.2f}x, identical answers "
              f"{100 * record['identical']:.1f}%  -> {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            import time

            from fmbook.book import costs
            from fmbook.book.runner import run, worker_plan

            cache_before, t0 = costs.computed_cache_mb(), time.perf_counter()
            outcomes = run(args.targets, profile=args.profile, overrides=_parse_overrides(args.parameter),
                           jobs=args.jobs, force=args.force)
            costs.log_run(args.profile, args.targets, time.perf_counter() - t0,
                          ran=sum(o.status == "ran" for o in outcomes),
                          skipped=sum(o.status == "skipped" for o in outcomes),
                          failed=sum(o.status not in ("ran", "skipped") for o in outcomes),
                          cache_mb_before=cache_before, jobs=args.jobs,
                          threads=worker_plan(args.jobs, len({o.job.resolved.chapter for o in outcomes}))[1])
            return 0 if all(o.status in ("ran", "skipped") for o in outcomes) else 1
        if args.command == "book":
            import time

            from fmbook.book import costs
            from fmbook.book.build import build

            t0 = time.perf_counter()
            html = build(profile=args.profile)
            costs.log_build(args.profile, time.perf_counter() - t0)
            print(f"The book is at {html / 'index.html'}")
            return 0
        if args.command == "pdf":
            from fmbook.book.pdf import build_pdf

            print(f"The PDF is at {build_pdf(profile=args.profile)}")
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
        if args.command == "sync":
            from fmbook.book import pairs

            if args.check:
                problems = pairs.out_of_sync()
                print("\n".join(problems) or "every notebook pair is in sync")
                return 1 if problems else 0
            written = pairs.sync()
            print(f"synced {len(written)} notebook(s)" + (f": {', '.join(written)}" if written else ""))
            return 0
        if args.command == "costs":
            from fmbook.book import costs

            if args.write:
                print(f"wrote {costs.write(args.profile)} and the README's table")
            print(costs.render(costs.measure(args.profile)))
            return 0
        if args.command == "grade":
            from fmbook.book.grade import grade

            report = grade(args.notebook, profile=args.profile, rel_tol=args.tolerance)
            print(report.text())
            return 0 if report.finished else 1
        if args.command == "new-chapter":
            from fmbook.book.scaffold import new_chapter

            for path in new_chapter(args.name, title=args.title):
                print(f"wrote {path}")
            print("next: complete the registry entry, then python -m fmbook run " + args.name + " --profile smoke")
            return 0
        if args.command == "bench":
            return _bench(args)
        if args.command == "status":
            from fmbook.book.status import status_rows

            for row in status_rows():
                print(" | ".join(str(v) for v in row.values()))
            return 0
    except (profiles.ParameterError, assets.AssetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 2
