"""The `mdp-opt` command: one module per subcommand, each with `add_arguments(parser)` and `run(args) -> int`.

Invalid input exits with code 2 and one line naming the field; an infeasible budget is a normal
result (exit 0); a failed solve exits 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..result import BackendError
from ..spec import SpecError
from . import bench, frontier, setup_mindtpy, solve
from .common import UsageError

# name -> (module, one line of help)
SUBCOMMANDS = {
    "validate": (solve.Validate, "check a spec file against the spec format"),
    "solve": (solve.Solve, "solve a spec under a budget"),
    "backends": (solve.Backends, "which backends are installed, and how to add the others"),
    "frontier": (frontier, "optimal value at every budget (the value-versus-cost curve)"),
    "bench": (bench, "run backends side by side over specs and report time, objective, agreement"),
    "setup-mindtpy": (setup_mindtpy, "install and build what the mindtpy backend needs"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdp-opt", description="Exact multi-dimensional pruning under budgets.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        return args.run(args)
    except (SpecError, UsageError, BackendError) as e:
        print(f"mdp-opt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["SUBCOMMANDS", "UsageError", "build_parser", "main"]
