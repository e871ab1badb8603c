"""benchmarks/width_sensitivity.py: each model narrows exactly its kind of width, and the table has a row per model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import width_sensitivity  # noqa: E402


def test_each_model_narrows_its_kind_of_width_alone(capsys):
    assert width_sensitivity.main(["--size", "32", "--runtime", "eager", "--runs", "2", "--latency", "flops"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    names = [row.split(" | ")[0][2:] for row in rows[1:]]
    assert names == ["full"] + [n for n, _ in width_sensitivity.VARIANTS] + ["full again"]
    assert rows[1].endswith("| 1.000 |")                          # the full model is the yardstick


def test_narrowed_sets_the_largest_choice_within_the_width():
    from mdp_opt import Dim, Spec, Term
    import numpy as np
    spec = Spec(dims=(Dim("blocks.0.qk_dim", (8, 16, 64)), Dim("blocks.0.v_dim", (8, 16, 64)), Dim("embed", (48, 96))),
                objective=(Term(("embed",), np.array([1.0, 2.0])),), costs={"latency": (Term(("embed",), np.ones(2)),)})
    full = {"blocks.0.qk_dim": 2, "blocks.0.v_dim": 2, "embed": 1}
    assert width_sensitivity.narrowed(spec, full, {"qk_dim": 32}) == {**full, "blocks.0.qk_dim": 1}
    assert width_sensitivity.narrowed(spec, full, {"embed": 10, "v_dim": 8}) == {**full, "embed": 0, "blocks.0.v_dim": 0}
