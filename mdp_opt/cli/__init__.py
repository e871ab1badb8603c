"""The `mdp-opt` command: one module per subcommand, each with `add_arguments(parser)` and `run(args) -> int`.

Exit codes: 0 done (an infeasible budget is a normal result); 1 a failed solve, or exact results that
disagree (`bench`); 2 bad input, with one line naming the field; 130 interrupted (Ctrl-C), after
printing the best answer found so far; 141 the output was closed early (e.g. `| head`), quietly.
"""

from __future__ import annotations

import argparse
import os
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


EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        return args.run(args)
    except (SpecError, UsageError, BackendError) as e:
        print(f"mdp-opt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mdp-opt: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away: say nothing more, and keep Python from complaining while it flushes at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


__all__ = ["SUBCOMMANDS", "UsageError", "build_parser", "main"]
