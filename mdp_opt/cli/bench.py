"""`mdp-opt bench`: backends side by side over specs; exit code 1 when exact results disagree."""

from __future__ import annotations

import argparse
import sys

from ..bench import DEFAULT_EXAMPLES, bench
from ..files import atomic_write_text
from ..reports import bench_markdown
from ..result import Status
from .common import parse_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run backends side by side; exit code 1 when exact results disagree. "
                          f"Default specs: the generated families {', '.join(DEFAULT_EXAMPLES)}.")
    parser.add_argument("specs", nargs="*", metavar="SPEC",
                        help="spec JSON file, directory of them, example:NAME[,size=value...] "
                             "(e.g. example:resnet50,choices=32), or example:instances (the four real instances)")
    parser.add_argument("--backends", metavar="A,B,C", help="comma-separated; default every installed one but brute")
    parser.add_argument("--time-limit", type=float, metavar="S", help="seconds per solve")
    parser.add_argument("--repeats", type=int, default=1, metavar="N", help="solves per spec and backend (median time)")
    parser.add_argument("--option", action="append", metavar="[BACKEND.]KEY=VALUE",
                        help="backend option for every backend, or for one with a BACKEND. prefix (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list instead of the table")
    parser.add_argument("--markdown", metavar="FILE", help="also write the Markdown table to FILE")
    parser.add_argument("--plot", metavar="FILE", help="also draw time per backend (log scale) to FILE")
    parser.add_argument("--ray", metavar="ADDRESS",
                        help="run the solves on a Ray cluster: its address, auto (`ray start` here) or local:N")


def run(args: argparse.Namespace) -> int:
    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    report = bench(args.specs or None, backends, args.time_limit, args.repeats, parse_options(args.option),
                   progress=True, ray=args.ray)
    print(report.to_json() if args.json else bench_markdown(report), end="" if not args.json else "\n")
    if args.markdown:
        atomic_write_text(args.markdown, bench_markdown(report))
    if args.plot:
        from ..plots import plot_bench
        plot_bench(report, args.plot)
    errors = [r for r in report.rows if r.status == Status.ERROR.value]
    if errors:
        print(f"mdp-opt bench: {len(errors)} solve(s) failed; see the status and note columns", file=sys.stderr)
    if report.disagreements:
        banner = "!" * 72
        print(f"\n{banner}\nEXACT RESULTS DISAGREE ({len(report.disagreements)}):", file=sys.stderr)
        for d in report.disagreements:
            print(f"  {d}", file=sys.stderr)
        print(banner, file=sys.stderr)
        return 1
    return 0
