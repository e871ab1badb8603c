"""examples/digits_iterative.py --quick end to end (real data, real training, real timing): the table is printed,
every MDP model is within the final budget on its latency tables, and its measured latency is reported.

How near the measured latency comes to the prediction is a timing, so it is not asserted here (these machines
are shared and noisy; a 2-3 ms model measured 49-70% of the dense one at 45% predicted in one afternoon):
benchmarks/latency_accuracy.py reports it with its noise floor."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_iterative.py"

@pytest.mark.slow
def test_quick_run_prints_the_table_and_meets_the_budget(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("digits_iterative_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    rows = module.main(["--quick", "--cache-dir", str(tmp_path / "latency-cache")])
    out = capsys.readouterr().out
    assert "| method | test accuracy | predicted latency | measured latency | measured / dense | note |" in out
    budget = module.QUICK.budget
    names = [r.method for r in rows]
    assert names[:3] == ["dense", "one-shot MDP", f"iterative MDP ({module.QUICK.steps} steps)"]
    for row in rows[1:3]:
        assert f"| {row.method} |" in out
        assert row.predicted_percent <= budget + 1e-6
        assert row.measured_ms > 0 and math.isfinite(row.measured_ms) and row.measured_percent > 0
        assert 0.1 <= row.accuracy <= 1.0                      # ten balanced classes: chance is 10%
    assert "iterative MDP step 1 at iteration" in out
    try:
        import torch_pruning  # noqa: F401
        assert names[3].startswith("Torch-Pruning")
    except ImportError:
        assert "Torch-Pruning: skipped (torch_pruning is not installed" in out
