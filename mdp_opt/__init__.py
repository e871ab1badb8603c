"""mdp-opt: exact multi-dimensional structured pruning under hard budgets.

    import mdp_opt
    spec = mdp_opt.examples.make("mdp-rn50-step10")          # or mdp_opt.load("spec.json")
    result = mdp_opt.solve(spec, budget="50%", backend="cpsat")
"""

from . import bench, examples  # modules: mdp_opt.bench.bench(...), mdp_opt.examples.make(...)
from .backend import (Backend, Feature, FrontierUnavailable, all_backends, backend_status, backends_with,
                      get_backend, installed_backends, register_backend, take_options)
from .budgets import default_resource, resolve_budgets, within_budget
from .evaluate import Evaluation, evaluate, kept_counts
from .frontier import FrontierPoint, frontier
from .measured import MeasuredFit, MeasuredRound, fit_measured, solve_measured
from .result import Answer, BackendError, Interrupted, Result, Status
from .solve import solve, verify
from .spec import Block, Dim, Spec, SpecError, Term, dumps, importance_table, load, loads, save

__version__ = "0.1.0"

__all__ = [
    "Answer", "Backend", "BackendError", "Block", "Dim", "Evaluation", "Feature", "FrontierPoint",
    "FrontierUnavailable", "Interrupted", "MeasuredFit", "MeasuredRound", "Result", "Spec", "SpecError", "Status", "Term",
    "all_backends", "backend_status", "backends_with", "bench", "default_resource", "dumps", "evaluate",
    "examples", "fit_measured", "frontier", "get_backend", "importance_table", "installed_backends", "kept_counts",
    "load", "loads", "register_backend", "resolve_budgets", "save", "solve", "solve_measured", "take_options",
    "verify", "within_budget",
]
