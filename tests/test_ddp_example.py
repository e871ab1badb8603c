"""examples/ddp_prune.py end to end, started by torchrun as the README says and by itself (it spawns its
ranks): 2 CPU processes (gloo), real data, real training, measured latency. The slow lane."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ddp_prune.py"
QUICK = ["--epochs", "6", "--finetune", "3", "--batches", "4", "--repeats", "3"]   # 3 + 1 epochs: pruned 19-37%


# A rank aborting in gloo's C++ layer with this line and no Python traceback was seen about once in 20 runs on a
# loaded 2-core machine, right after rank 0 broadcast its latency tables; its cause is not found yet (open in
# the project's notes). Such a run is repeated once, with a warning; any other failure, or the abort twice, fails.
GLOO_ABORT = "terminate called without an active exception"


def _run(launcher: list[str], tmp_path: Path) -> dict:
    out = tmp_path / "summary.json"
    command = launcher + [str(EXAMPLE), *QUICK, "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and GLOO_ABORT in done.stderr:
        warnings.warn(f"a rank aborted in gloo ({GLOO_ABORT!r}); running the example once more")
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def _check(summary: dict) -> None:
    assert summary["world_size"] == 2
    assert summary["batches_scored"] == 2 * 4                  # both ranks' batches are in the importance
    assert len(set(summary["checksums_after_pruning"])) == 1  # every rank holds the same slimmed model ...
    assert len(set(summary["checksums_after_finetuning"])) == 1   # ... and it stays so under DDP training
    predicted = summary["predicted_ms"]
    assert predicted["pruned"] <= predicted["budget"] + 1e-9 and predicted["budget"] < predicted["dense"]
    assert summary["dense_accuracy"] > 0.8 and summary["pruned_accuracy"] > 0.5      # chance is 0.1


@pytest.mark.slow
def test_the_example_under_torchrun(tmp_path):
    _check(_run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], tmp_path))


@pytest.mark.slow
def test_the_example_spawns_its_own_ranks(tmp_path):
    _check(_run([sys.executable], tmp_path))
