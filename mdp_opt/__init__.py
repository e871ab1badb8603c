"""mdp-opt: exact multi-dimensional structured pruning under hard budgets.

    import mdp_opt
    spec = mdp_opt.load("spec.json")
    result = mdp_opt.solve(spec, budget="50%", backend="cpsat")
"""

from . import bench, examples  # modules: mdp_opt.bench.bench(...), mdp_opt.examples.make(...)
from .evaluate import Evaluation, brute_force, evaluate, kept_counts
from .frontier import FrontierPoint, frontier
from .measured import MeasuredFit, MeasuredRound, fit_measured, solve_measured
from .result import Answer, Result, Status
from .solve import (BackendError, backend_status, installed_backends, register_backend,
                    resolve_budgets, solve, take_options)
from .spec import Block, Dim, Spec, SpecError, Term, dumps, importance_table, load, loads, save

__version__ = "0.1.0"

__all__ = [
    "Answer", "BackendError", "Block", "Dim", "Evaluation", "FrontierPoint", "MeasuredFit", "MeasuredRound", "Result",
    "Spec", "SpecError", "Status", "Term",
    "backend_status", "bench", "brute_force", "dumps", "evaluate", "examples", "fit_measured", "frontier",
    "importance_table", "installed_backends", "kept_counts", "load", "loads", "register_backend", "resolve_budgets",
    "save", "solve", "solve_measured", "take_options",
]
