"""`mdp-opt validate`, `mdp-opt solve` and `mdp-opt backends`."""

from __future__ import annotations

import argparse
import json
import sys

from ..backend import all_backends, backend_status
from ..result import Interrupted, Status
from ..solve import solve
from .common import add_spec_arguments, parse_budget, parse_options, spec_from_args


class Validate:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_spec_arguments(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        spec = spec_from_args(args)
        full = spec.full_costs()
        print(f"ok: {spec.name or args.spec}: {len(spec.dims)} dims, {len(spec.blocks)} blocks, "
              f"{len(spec.objective)} objective terms")
        for r, ts in spec.costs.items():
            budget = spec.budgets.get(r)
            print(f"  {r}: {len(ts)} terms, full cost {full[r]:.10g}"
                  + (f", budget {budget:.10g} ({100 * budget / full[r]:.1f}% of full)"
                     if budget is not None and full[r] else ""))
        return 0


class Solve:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_spec_arguments(parser)
        parser.add_argument("--budget", action="append", metavar="[RESOURCE=]VALUE",
                            help="a number or a percentage of the full cost, e.g. 50%% or latency=120 (repeatable)")
        parser.add_argument("--backend", default="cpsat", help="backend name (see `mdp-opt backends`); default cpsat")
        parser.add_argument("--time-limit", type=float, metavar="S", help="seconds for the whole solve")
        parser.add_argument("--option", action="append", metavar="KEY=VALUE", help="backend option, e.g. threads=2")
        parser.add_argument("--json", action="store_true", help="print one JSON object with the result fields")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        spec = spec_from_args(args)
        try:
            result = solve(spec, parse_budget(args.budget), backend=args.backend, time_limit=args.time_limit,
                           **parse_options(args.option))
        except Interrupted as stopped:          # print the best answer so far, then exit 130
            print(json.dumps(stopped.result.to_dict(), indent=2, allow_nan=False) if args.json
                  else stopped.result.summary(), flush=True)
            print("mdp-opt: interrupted", file=sys.stderr)
            return 130
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False) if args.json else result.summary())
        return 1 if result.status is Status.ERROR else 0


class Backends:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        pass

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        status = backend_status()
        for name, backend in all_backends().items():
            ready, text = status[name]
            state = "ready    " if ready else "installed" if backend.installed else "missing  "
            features = ", ".join(sorted(f.value for f in backend.features))
            print(f"{name:10s} {state}  {text}\n{'':21s}features: {features or '-'}")
        return 0
