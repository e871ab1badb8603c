"""`mdp-opt frontier`: the optimal value at a grid of budgets, as a table or JSON, optionally plotted."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..budgets import resolve_budgets
from ..frontier import checked_resource, frontier
from ..reports import frontier_table
from .common import UsageError, add_spec_arguments, parse_options, spec_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_spec_arguments(parser)
    parser.add_argument("--resource", help="the resource whose budget varies (default: latency, or the only one)")
    parser.add_argument("--points", type=int, default=50, help="budgets in the grid (default 50)")
    parser.add_argument("--budgets", metavar="B1,B2,...",
                        help="explicit budgets (numbers or percentages of the full cost) instead of the grid")
    parser.add_argument("--backend", default="dp",
                        help="dp (one pass for every budget, default) or any backend (one solve per budget)")
    parser.add_argument("--time-limit", type=float, metavar="S", help="seconds (per solve with other backends)")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE", help="backend option, e.g. resolution=10")
    parser.add_argument("--json", action="store_true",
                        help='print a JSON list of {"budget", "objective", "costs", "status"}')
    parser.add_argument("--plot", metavar="OUT.png", help="draw objective versus budget to this image file")
    parser.add_argument("--ray", metavar="ADDRESS",
                        help="solve budget by budget on a Ray cluster: its address, auto or local:N")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="solve budget by budget in N processes here, each sharing its presolve (default 1)")


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    resource = checked_resource(spec, args.resource)
    budgets = None
    if args.budgets:
        budgets = []
        for item in args.budgets.split(","):
            text = item.strip()
            try:
                value = text if text.endswith("%") else float(text)
            except ValueError:
                raise UsageError(f"--budgets: {text!r} is neither a number nor a percentage like 50%") from None
            budgets.append(resolve_budgets(spec, {resource: value})[resource])
    options = parse_options(args.option)
    if args.time_limit is not None:
        options["time_limit"] = args.time_limit
    if args.points < 1:
        raise UsageError(f"--points: expected a positive number of budgets, got {args.points}")
    start = time.perf_counter()
    try:
        points = frontier(spec, resource, budgets, args.points, backend=args.backend, ray=args.ray,
                          workers=args.workers, **options)
    except TimeoutError as e:
        print(f"mdp-opt: {e}; raise --time-limit or pass --option resolution=R", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps([p.to_dict() for p in points], indent=2))
    else:
        print(frontier_table(spec, resource, points, elapsed))
    if args.plot:
        from ..plots import plot_frontier
        plot_frontier(points, spec=spec, resource=resource, path=args.plot)
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0
