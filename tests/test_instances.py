"""The four real MDP instances reach their proven optimum with every exact backend, via the API and the CLI.

The instances live in ../shared/instances beside the clone (see conftest.py); tests skip where absent.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import mdp_opt
from conftest import INSTANCE_OPTIMA, INSTANCES
from mdp_opt import Status, load, solve
from mdp_opt.cli import main

EXACT = [b for b in mdp_opt.installed_backends() if b not in ("mindtpy", "brute")]
SOLVERS = [b for b in ("cpsat", "milp") if b in EXACT]


@pytest.mark.parametrize("backend", EXACT)
def test_instance_reaches_the_proven_optimum(instance, backend):
    path, optimum = instance
    result = solve(load(path), backend=backend)
    assert result.status is Status.OPTIMAL, result
    assert result.objective == optimum
    assert result.costs["latency"] <= result.budgets["latency"]


@pytest.mark.parametrize("backend", SOLVERS)
def test_instance_without_presolve(instance, backend):
    """The solver proves the optimum on the full marginal model, without the shared presolve's help."""
    path, optimum = instance
    result = solve(load(path), backend=backend, presolve=False)
    assert result.status is Status.OPTIMAL and result.objective == optimum
    assert "presolve" not in result.stats


@pytest.mark.parametrize("backend", EXACT)
def test_cli_solve_json(instance, backend, capsys):
    path, optimum = instance
    code = main(["solve", str(path), "--backend", backend, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["status"] == "optimal" and out["objective"] == optimum and out["backend"] == backend


SMALLEST = INSTANCES / "mdp-mbv1-2nd-step00.json"


@pytest.mark.skipif(not SMALLEST.exists(), reason=f"real instance {SMALLEST} absent")
@pytest.mark.parametrize("backend", SOLVERS)
def test_cli_subprocess_prints_only_json(backend):
    """A real `mdp-opt solve --json` process: stdout is one JSON object (no solver banner or log)."""
    proc = subprocess.run([sys.executable, "-m", "mdp_opt.cli", "solve", str(SMALLEST), "--backend", backend,
                           "--json", "--option", "threads=2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "optimal" and out["objective"] == INSTANCE_OPTIMA[SMALLEST.stem]
