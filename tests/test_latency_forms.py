"""benchmarks/latency_forms.py's comparison on a made-up case: a device that charges early and late layers
differently is predicted exactly by the chosen form and not by one factor for all the tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import latency_forms  # noqa: E402


def made_up_case(path: Path) -> None:
    rng = np.random.default_rng(3)
    names = ["full"] + [f"reference {i}" for i in range(8)]
    names += [f"answer {p}%" for p in latency_forms.FIT_BUDGETS + latency_forms.CHECK_BUDGETS]
    configs = {}
    for n in names:
        te, tl, p, a = rng.uniform(1, 10), rng.uniform(1, 10), rng.uniform(1, 5), rng.uniform(1, 5)
        measured = 2.0 * te + 0.5 * tl + 0.3 * p + 0.2 * a + 1.0
        configs[n] = {"measured_ms": measured, "noise": 0.01, "T": te + tl, "Te": te, "Tl": tl, "Thi": te, "Tlo": tl,
                      "P": p, "A": a, "B": 1.0, "1": 1.0}
    path.write_text(json.dumps({"case": "made up", "references": names[:9], "configs": configs}))


def test_the_chosen_form_fits_a_device_with_early_and_late_rates_exactly(tmp_path, capsys):
    made_up_case(tmp_path / "case.json")
    latency_forms.analyze([str(tmp_path / "case.json")])
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| case |"))
    within = next(line for line in out.splitlines() if line.startswith("| answers within 5% |"))
    forms = [c.strip() for c in header.strip("|").split("|")][2:]
    counts = dict(zip(forms, [c.strip() for c in within.strip("|").split("|")][2:]))
    row = next(line for line in out.splitlines() if line.startswith("| made up |"))
    cells = dict(zip(forms, [c.strip() for c in row.strip("|").split("|")][2:]))
    assert cells["Te+Tl+P+A+c"] == "0.0 / 0.0" and counts["Te+Tl+P+A+c"] == "4/4"
    assert cells["T+P+A+c"] != "0.0 / 0.0"
