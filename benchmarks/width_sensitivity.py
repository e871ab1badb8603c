"""One kind of width at a time: which widths' savings do the latency tables misjudge inside the whole model?

    python benchmarks/width_sensitivity.py --size 64 --runtime openvino

ViT-Tiny (tests/zoo_models.py, random weights), the raw measured tables (no calibration) and, in ONE window of
interleaved runs, the full model and the model with one kind of width narrowed in every block (the attention's
q/k channels per head, its v channels per head, its heads, the MLP's hidden width, the embedding), a few
combinations, and the full model again. Per model it prints the measured median, the tables' sum and
measured / tables relative to the full model's: 1.00 where the tables carry that width's cost as the whole model
pays it, above 1 where they promise more saving than the model gives (a solver picks such widths first, and its
answers then measure slower than predicted), below 1 where they promise less.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

import mdp_opt
from mdp_opt.adapters.torch import MeasuredLatency, build_spec
from mdp_opt.adapters.torch.latency_model import as_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from zoo_models import ARCHITECTURES, settle_batchnorm  # noqa: E402

VARIANTS = [("qk 8", {"qk_dim": 8}), ("qk 32", {"qk_dim": 32}), ("v 8", {"v_dim": 8}), ("v 32", {"v_dim": 32}),
            ("heads 1", {"heads": 1}), ("mlp 64", {"mlp_hidden": 64}), ("mlp 384", {"mlp_hidden": 384}),
            ("embed 96", {"embed": 96}), ("embed 48", {"embed": 48}), ("qk 8, mlp 64", {"qk_dim": 8, "mlp_hidden": 64}),
            ("qk 8, v 8", {"qk_dim": 8, "v_dim": 8}),
            ("all half", {"qk_dim": 32, "v_dim": 32, "mlp_hidden": 384, "embed": 96})]


def narrowed(spec: mdp_opt.Spec, full: dict[str, int], widths: dict[str, int]) -> dict[str, int]:
    """`full` with every dim whose kind (the last part of its name) is in `widths` at the largest choice <= that
    width (its smallest choice if none is)."""
    choice = dict(full)
    for d in spec.dims:
        kind = d.name.split(".")[-1]
        if kind in widths:
            choice[d.name] = max([i for i, c in enumerate(d.choices) if c <= widths[kind]], default=0)
    return choice


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--runtime", default="openvino", help="eager, onnxruntime or openvino")
    p.add_argument("--runs", type=int, default=21, help="runs of each whole model, interleaved")
    p.add_argument("--repeats", type=int, default=7, help="timed repetitions per table entry")
    p.add_argument("--latency", default="measure", help="measure (tables timed in --runtime), or flops (a check)")
    p.add_argument("--cache-dir", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = ARCHITECTURES["vit_tiny"](num_classes=1000, image_size=args.size)
    settle_batchnorm(model, [torch.randn(16, 3, args.size, args.size) for _ in range(4)])
    x = torch.randn(1, 3, args.size, args.size)
    data = [(torch.randn(8, 3, args.size, args.size), torch.randint(0, 1000, (8,))) for _ in range(4)]
    timer = MeasuredLatency(threads=1, repeats=args.repeats, cache_dir=args.cache_dir, progress=False,
                            calibrate=False, runtime=args.runtime)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy,
                                  latency=timer if args.latency == "measure" else args.latency, step=16,
                                  mlp_step=64, head_dim_step=8)
    full, active = spec.full_configuration()
    configs = [("full", full)] + [(name, narrowed(spec, full, w)) for name, w in VARIANTS] + [("full again", full)]
    models = [handle.apply(as_result(spec, c, active, name)) for name, c in configs]
    samples = timer.measure_interleaved(models, x, args.runs)
    print(f"ViT-Tiny {args.size} px, {args.runtime}, tables: {args.latency}, {args.runs} runs each, interleaved")
    print("| model | measured ms | tables | measured / tables, relative to the full model |")
    print("|---|---:|---:|---:|")
    base = None
    for (name, choice), runs in zip(configs, samples):
        ms = statistics.median(runs)
        tables = mdp_opt.evaluate(spec, choice, active).costs["latency"]
        base = base or ms / tables
        print(f"| {name} | {ms:.3f} | {tables:.4g} | {ms / tables / base:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
