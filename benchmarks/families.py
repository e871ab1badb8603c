"""Every model family through `build_spec`: dims, blocks, build time, solve time at 70/50/30%, and the
parameters and measured latency of the model before and after pruning.

    .venv/bin/python benchmarks/families.py             # hand-written family models
    .venv/bin/python benchmarks/families.py --real      # + torchvision/timm/transformers
    .venv/bin/python benchmarks/families.py --only swin,hybrid --measured      # tables timed on this machine

Budgets are on the spec's latency: multiply-accumulates by default (instant, exact), or measured tables
(`--measured`: each operation timed at every width into a fresh cache, calibrated). Build time is one run
(importance on two batches, recognition, tables). "cheapest" is the spec's cost of its smallest configuration
(every width at its smallest choice, every block removed) as a share of the full cost: a budget below it
is infeasible. Solve time is the median of `--repeats` solves. Latency
is `measure_latency` (one thread, cache flushed, median of 20 runs) of the dense model and of each pruned
model, measured in alternation for `--rounds` rounds (median); the noise floor is the dense model against a
copy of itself, measured the same way.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import mdp_opt
from mdp_opt.adapters.torch import MeasuredLatency, build_spec, measure_latency

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import family_models as fm  # noqa: E402
from torch_models import MobileNetV2Like, small_resnet  # noqa: E402
from vit_models import TimmStyleViT, TorchvisionStyleViT  # noqa: E402

BUDGETS = (70, 50, 30)


def hand_written() -> dict[str, tuple[Callable[[], nn.Module], int, dict]]:
    """name -> (factory, image size, build options)."""
    vit = dict(image=64, patch=8, dim=96, depth=4, heads=4, hidden=192)
    return {
        "ResNet (basic + bottleneck)": (lambda: small_resnet(), 32, {}),
        "MobileNet-V2-like": (lambda: MobileNetV2Like(), 32, {}),
        "ConvNeXt-like": (lambda: fm.ConvNeXtLike(dims=(32, 64, 128), depths=(2, 2, 2)), 64, {}),
        "DenseNet-like (concat)": (lambda: fm.DenseNetLike(growth=16), 32, {}),
        "Branches + neck (concat)": (lambda: fm.BranchNet(), 32, dict(step=4)),
        "ViT, fused qkv (timm-like)": (lambda: TimmStyleViT(image_size=64, patch=8, dim=96, depth=4, num_heads=4,
                                                            mlp_hidden=192), 64, {}),
        "ViT, nn.MultiheadAttention": (lambda: TorchvisionStyleViT(image_size=64, patch=8, dim=96, depth=4,
                                                                  num_heads=4, mlp_hidden=192), 64, {}),
        "ViT, separate q/k/v (HF-like)": (lambda: fm.HFStyleViT(**vit), 64, {}),
        "ViT, layer scale (CaiT-like)": (lambda: fm.LayerScaleViT(**vit), 64, {}),
        "ViT, SDPA": (lambda: fm.GenericViT(fm.SDPAAttention, **vit), 64, {}),
        "Swin-like (hierarchical)": (lambda: fm.SwinLike(dims=(32, 64), heads=(2, 4), window=4, image=64,
                                                         patch=4), 64, {}),
        "Hybrid (conv + MHA)": (lambda: fm.HybridNet(image=64, dim=64), 64, {}),
    }


def real() -> dict[str, tuple[Callable[[], nn.Module], int, dict]]:
    out: dict[str, tuple[Callable[[], nn.Module], int, dict]] = {}
    try:
        import torchvision.models as tv
        out.update({f"torchvision {n}": (lambda n=n: getattr(tv, n)(num_classes=10), 224, dict(step=32))
                    for n in ("resnet50", "mobilenet_v3_large", "convnext_tiny", "densenet121", "swin_t")})
    except Exception as e:       # not installed, or built for another torch
        print(f"(torchvision not usable: {type(e).__name__}: {str(e)[:60]})")
    try:
        import timm
        out.update({f"timm {n}": (lambda n=n: timm.create_model(n, num_classes=10), 224, dict(step=32))
                    for n in ("deit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "deit3_small_patch16_224")})
    except Exception as e:
        print(f"(timm not usable: {type(e).__name__}: {str(e)[:60]})")
    return out


def measured_in_alternation(models: list[nn.Module], x: torch.Tensor, rounds: int) -> list[float]:
    samples: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for m, out in zip(models, samples):
            out.append(measure_latency(m, x))
    return [statistics.median(s) for s in samples]


def run(name: str, factory: Callable[[], nn.Module], size: int, options: dict, args: argparse.Namespace) -> str:
    torch.manual_seed(0)
    model = factory().eval()
    with torch.no_grad():                      # random weights, made to look trained where it matters:
        for p in model.parameters():
            if p.dim() > 1 and not p.any():    # a zero-initialised head stops every Taylor score
                p.normal_(0, 0.02)
            elif p.numel() > 1 and bool((p == p.flatten()[0]).all()) and 0 < abs(float(p.flatten()[0])) < 1e-3:
                p.fill_(0.1)                   # a layer scale initialised to 1e-6 makes its block worth ~0
    x = torch.randn(1, 3, size, size)
    data = [(torch.randn(4, 3, size, size), torch.randint(0, 10, (4,))) for _ in range(2)]
    cache = tempfile.TemporaryDirectory()       # a fresh cache: the build time includes every timing
    latency = MeasuredLatency(progress=False, cache_dir=cache.name) if args.measured else "flops"
    kwargs = dict(data=data, loss_fn=F.cross_entropy, latency=latency, costs=("latency", "params"), step=8,
                  mlp_step=16, head_dim_step=8)
    kwargs.update(options)
    start = time.perf_counter()
    spec, handle = build_spec(model, x, **kwargs)
    build_s = time.perf_counter() - start
    cache.cleanup()
    cheapest = mdp_opt.evaluate(spec, {d.name: 0 for d in spec.dims},
                                {b: False for b in spec.block_names}).costs["latency"] / spec.full_cost("latency")
    prunable = sum(len(d.choices) > 1 for d in spec.dims)
    solve_s, results = [], []
    for percent in BUDGETS:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = mdp_opt.solve(spec, {"latency": f"{percent}%"}, backend=args.backend)
            times.append(time.perf_counter() - t0)
        solve_s.append(statistics.median(times))
        results.append(result)
    smalls = [handle.apply(r) if r.has_solution else None for r in results]
    candidates = [model, copy.deepcopy(model)] + [s for s in smalls if s is not None]
    ms = measured_in_alternation(candidates, x, args.rounds)
    dense, twin, after = ms[0], ms[1], iter(ms[2:])
    params = [sum(p.numel() for p in s.parameters()) if s is not None else None for s in smalls]
    lat = [next(after) if s is not None else None for s in smalls]
    total = sum(p.numel() for p in model.parameters())

    def pct(value: float | None, full: float) -> str:
        return "infeasible" if value is None else f"{100 * value / full:.0f}%"

    return (f"| {name} | {spec.meta['family']} | {prunable}/{len(spec.dims)} | {len(spec.block_names)} | "
            f"{build_s:.2f} | {' / '.join(f'{s:.3f}' for s in solve_s)} | {100 * cheapest:.0f}% | {total / 1e3:.0f}k | "
            f"{' / '.join(pct(p, total) for p in params)} | {dense:.2f} | {' / '.join(pct(v, dense) for v in lat)} | "
            f"{100 * (twin - dense) / dense:+.1f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="also torchvision/timm models, where installed")
    parser.add_argument("--only", default="", help="comma-separated substrings of architecture names")
    parser.add_argument("--measured", action="store_true", help="measured latency tables instead of MACs")
    parser.add_argument("--backend", default="milp")
    parser.add_argument("--repeats", type=int, default=3, help="solves per budget (median)")
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds in alternation (median)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    archs = hand_written()
    if args.real:
        archs.update(real())
    if args.only:
        archs = {n: a for n, a in archs.items() if any(s.lower() in n.lower() for s in args.only.split(","))}
    print(f"torch {torch.__version__}, {args.backend}, budgets on {'measured latency' if args.measured else 'MACs'} "
          f"at {'/'.join(map(str, BUDGETS))}%, batch 1, 1 thread\n")
    print("| architecture | family | prunable dims | blocks | build (s) | solve 70/50/30% (s) | cheapest | params | "
          "params after 70/50/30% | latency (ms) | latency after 70/50/30% | noise |")
    print("|---|---|---:|---:|---:|---|---:|---:|---|---:|---|---:|")
    for name, (factory, size, options) in archs.items():
        try:
            print(run(name, factory, size, options, args), flush=True)
        except Exception as e:       # one architecture failing is a row, not the end of the run
            print(f"| {name} | error: {type(e).__name__}: {str(e)[:120]} |", flush=True)


if __name__ == "__main__":
    main()
