"""benchmarks/latency_accuracy.py runs end to end on a tiny setting and reports what it measured (no timings
asserted: only that every figure the report promises is there and consistent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("torch")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]


def test_latency_accuracy_benchmark_on_a_tiny_setting(tmp_path):
    results, plot = tmp_path / "results.jsonl", tmp_path / "plot.png"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "latency_accuracy.py"), "--archs", "resnet18", "--configs", "32x1",
           "--runtimes", "eager", "--budgets", "80,60", "--scale", "0.25", "--step-scale", "0.25", "--repeats", "1",
           "--runs", "10", "--results", str(results), "--plot", str(plot), "--cache-dir", str(tmp_path / "cache")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (case,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert (case["arch"], case["size"], case["batch"], case["runtime"]) == ("resnet18", 32, 1, "eager")
    assert all(v >= 0 for v in case["calibration"]["factors"].values()) and case["full_ms_now"] > 0
    assert case["rotation"] >= case["calibration_rotation"] - 4     # validated among the reference models
    assert case["drift"] > 0 and case["drift_full"] == pytest.approx(case["full_ms_now"] / next(
        p["measured_ms"] for p in case["calibration"]["points"] if p["model"] == "full"))
    rows = [r for r in case["rows"] if "measured_ms" in r]
    assert [r["budget"] for r in case["rows"]] == [80, 60] and rows
    for r in rows:
        assert r["predicted_ms"] <= r["budget_ms"] * (1 + 1e-9)          # one solve, within its budget
        assert r["error"] == pytest.approx(r["predicted_ms"] / r["measured_ms"] - 1)
        assert r["noise"] >= 0
        assert r["measured_alone_ms"] > 0 and r["error_alone"] == pytest.approx(r["predicted_ms"] / r["measured_alone_ms"] - 1)
    assert "| resnet18 | 32px x1 | eager | 80% |" in out.stdout and "answers: |error| <= 5%" in out.stdout
    assert f"timed alone ({len(rows)} answers)" in out.stdout
    assert plot.stat().st_size > 10_000
    report = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "latency_accuracy.py"), "--report-only",
                             "--results", str(results), "--plot", ""], capture_output=True, text=True, timeout=120)
    assert report.returncode == 0 and "| resnet18 | 32px x1 | eager | 60% |" in report.stdout


def test_machine_drift_is_the_median_ratio_over_the_models_measured_both_times():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from latency_accuracy import machine_drift

    points = [{"model": "full", "measured_ms": 10.0}, {"model": "a", "measured_ms": 2.0},
              {"model": "b", "measured_ms": 4.0}, {"model": "answer", "measured_ms": 1.0}]
    # now: full 1.5x (an outlier), a 1.1x, b 1.2x; "new" was not measured at calibration
    samples = [[15.0, 15.0], [2.2, 2.2], [4.8, 4.8], [9.0]]
    assert machine_drift(points, ["full", "a", "b", "new"], samples) == pytest.approx(1.2)
