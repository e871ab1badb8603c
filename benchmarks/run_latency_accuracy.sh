#!/usr/bin/env bash
# The full latency-accuracy run on this machine: one case per process, each under the shared benchmark lock
# (so other benchmarks can run between cases). Results are appended to benchmarks/latency_accuracy.jsonl.
#   bash benchmarks/run_latency_accuracy.sh            # then: python benchmarks/latency_accuracy.py --report-only
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
for config in 64x1 224x1 64x32; do
  for arch in resnet18 resnet50 mobilenet_v2 vgg11 efficientnet_b0 vit_tiny; do
    for runtime in eager onnxruntime; do
      flock "${BENCH_LOCK:-${TMPDIR:-/tmp}/mdp-opt-bench.lock}" "$PY" benchmarks/latency_accuracy.py --archs "$arch" --configs "$config" \
        --runtimes "$runtime" --plot "" "$@"
    done
  done
done
