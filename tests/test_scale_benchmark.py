"""benchmarks/scale.py: issue 18's benchmark runs, and it reports backends that disagree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_hard_target_runs_and_checks_that_the_backends_agree():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--targets", "hard", "--hard-seeds", "1",
           "--hard-first-seed", "3", "--backends", "cpsat,dp"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "seeds 3-3" in out.stdout and "| 3 | ViT-B | 3 |" in out.stdout
    assert "proven optima of the backends agree on 1 of 1 rows" in out.stdout
    assert "- cpsat: proven optimal on 1 of 1" in out.stdout and "- dp: proven optimal on 1 of 1" in out.stdout


def test_two_different_proven_optima_are_a_disagreement(capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from scale import disagreement

    same = {"cpsat": {"status": "optimal", "objective": 10.0, "bound": 10.0},
            "dp": {"status": "optimal", "objective": 10.0, "bound": 10.0}, "milp": {"error": "not installed"}}
    assert not disagreement("x", same)
    differ = {**same, "dp": {"status": "optimal", "objective": 10.5, "bound": 10.5}}
    assert disagreement("x", differ)
    assert "DISAGREEMENT" in capsys.readouterr().out
    # a feasible answer under another backend's proven bound is no contradiction; above it, it is
    assert not disagreement("x", {**same, "dp": {"status": "feasible", "objective": 9.0, "bound": 12.0}})
    assert disagreement("x", {**same, "dp": {"status": "feasible", "objective": 11.0, "bound": 12.0}})
