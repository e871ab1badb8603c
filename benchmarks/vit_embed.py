"""Why is a ViT's embedding width (`embed`) never pruned? The importance model, the latency model, or a bug?

    python benchmarks/vit_embed.py                     # ViT-Tiny, 224 px, FLOPs and measured (eager) latency
    python benchmarks/vit_embed.py --latency flops     # FLOPs only: seconds

Prints, for a ViT-Tiny-sized model (random weights, Taylor importance on random batches):
1. what the solver keeps of `embed` at 90/70/50/30% budgets;
2. importance per channel and in total, per kind of dim (embed, heads, q/k, v, MLP hidden),
   and how an embed channel's score is made (how many layers it sums);
3. the price of the first pruning step of each dim: importance lost / latency saved;
4. the best answer at each budget when embed is forced down one or more steps, against the
   unconstrained optimum (is the solver right under its own model?);
5. the same solves with a uniform importance (every channel of every dim worth the same) and with
   the embed score averaged over the layers it couples instead of summed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import mdp_opt
from mdp_opt import Dim, Spec, Term

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from vit_models import TimmStyleViT  # noqa: E402

from mdp_opt.adapters.torch import ImportanceWarning, MeasuredLatency, build_spec  # noqa: E402

BUDGETS = (90, 70, 50, 30)
KINDS = ("heads", "qk_dim", "v_dim", "mlp_hidden")


def kind_of(dim: str) -> str:
    return "embed" if dim == "embed" else dim.rsplit(".", 1)[1]


def restrict(spec: Spec, dim: str, last: int) -> Spec:
    """`spec` with `dim` limited to its choices up to index `last` (every table sliced along it)."""
    def cut(t: Term) -> Term:
        if dim not in t.dims:
            return t
        index = [slice(None)] * len(t.dims)
        index[t.dims.index(dim)] = slice(0, last + 1)
        return Term(t.dims, t.table[tuple(index)], t.block)

    dims = [Dim(d.name, d.choices[:last + 1]) if d.name == dim else d for d in spec.dims]
    return spec.replace(dims=dims, objective=[cut(t) for t in spec.objective],
                        costs={r: [cut(t) for t in ts] for r, ts in spec.costs.items()})


def with_objective(spec: Spec, scale: dict[str, float]) -> Spec:
    """`spec` with each objective term of a dim of kind k multiplied by scale[k] (default 1)."""
    return spec.replace(objective=[Term(t.dims, t.table * scale.get(kind_of(t.dims[0]), 1.0), t.block)
                                   for t in spec.objective])


def uniform_importance(spec: Spec) -> Spec:
    """Every channel of every dim worth 1 / (channels of all dims): the objective counts kept channels."""
    terms = []
    for d in spec.dims:
        table = np.asarray(d.choices, dtype=float)
        gates = {t.block for t in spec.objective if t.dims == (d.name,)}
        share = table / len(gates)
        terms += [Term((d.name,), share, g) for g in gates]
    total = sum(d.choices[-1] for d in spec.dims)
    return spec.replace(objective=[Term(t.dims, t.table / total, t.block) for t in terms])


def embed_kept(spec: Spec, budget: int, backend: str) -> tuple[int, float]:
    r = mdp_opt.solve(spec, {"latency": f"{budget}%"}, backend=backend)
    return r.kept["embed"], r.objective


def per_kind(spec: Spec) -> dict[str, tuple[float, int]]:
    """Kind -> (importance at full width summed over its dims, channels)."""
    out: dict[str, list[float]] = {}
    for t in spec.objective:
        d = spec.dim(t.dims[0])
        k = kind_of(d.name)
        out.setdefault(k, [0.0, 0])[0] += float(t.table[-1])
    for d in spec.dims:
        out[kind_of(d.name)][1] += d.choices[-1]
    return {k: (v[0], int(v[1])) for k, v in out.items()}


def first_step_price(spec: Spec) -> dict[str, list[float]]:
    """Kind -> per dim: importance lost / latency saved by its first step down, everything else full."""
    full_choice, active = spec.full_configuration()
    base = mdp_opt.evaluate(spec, full_choice, active)
    prices: dict[str, list[float]] = {}
    for d in spec.dims:
        if d.size < 2:
            continue
        ev = mdp_opt.evaluate(spec, {**full_choice, d.name: d.size - 2}, active)
        saved = base.costs["latency"] - ev.costs["latency"]
        prices.setdefault(kind_of(d.name), []).append((base.value - ev.value) / saved if saved > 0 else float("inf"))
    return prices


def report(spec: Spec, label: str, backend: str) -> None:
    print(f"\n=== latency: {label} ===")
    embed = spec.dim("embed")
    print(f"embed choices: {embed.choices[0]}..{embed.choices[-1]} ({embed.size} choices: not pinned)")
    lat = [t for t in spec.costs["latency"] if "embed" in t.dims]
    share = sum(float(t.table[(-1,) * t.table.ndim]) for t in lat) / spec.full_cost("latency")
    print(f"terms over embed: {len(lat)} of {len(spec.costs['latency'])}, {100 * share:.0f}% of the full latency")

    print("\n1. kept embed at each budget (unconstrained optimum):")
    for b in BUDGETS:
        k, value = embed_kept(spec, b, backend)
        print(f"   {b}%: embed {k}/{embed.choices[-1]}, objective {value:.4f}")

    print("\n2. importance by kind of dim (normalised: the full model is worth 1):")
    for k, (total, channels) in sorted(per_kind(spec).items(), key=lambda kv: -kv[1][0]):
        print(f"   {k:10s} total {total:.4f}  channels {channels:5d}  per channel {total / channels:.2e}")

    print("\n3. price of the first pruning step (importance lost per unit of latency saved; median over the dims of a kind):")
    prices = first_step_price(spec)
    for k, p in sorted(prices.items(), key=lambda kv: statistics.median(kv[1])):
        print(f"   {k:10s} median {statistics.median(p):.3g}  min {min(p):.3g}  max {max(p):.3g}  ({len(p)} dims)")

    print("\n4. embed forced down (objective, relative to the unconstrained optimum at the same budget):")
    for b in BUDGETS:
        _, best = embed_kept(spec, b, backend)
        cells = []
        for last in range(embed.size - 2, max(-1, embed.size - 5), -1):
            r = mdp_opt.solve(restrict(spec, "embed", last), {"latency": b / 100 * spec.full_cost("latency")},
                              backend=backend)
            cells.append(f"embed<={embed.choices[last]}: "
                         + (f"{100 * (r.objective / best - 1):+.2f}%" if r.has_solution else r.status.value))
        print(f"   {b}%: " + ", ".join(cells))

    print("\n5. counterfactual importance models (kept embed at each budget):")
    counts = {"summed Taylor (as built)": spec, "uniform per channel": uniform_importance(spec)}
    layers = 2 + 6 * sum(1 for d in spec.dims if d.name.endswith(".mlp_hidden"))   # patch conv + head, 6 per block
    counts[f"embed averaged over its ~{layers} coupled layers"] = with_objective(spec, {"embed": 1.0 / layers})
    for name, variant in counts.items():
        kept = [embed_kept(variant, b, backend)[0] for b in BUDGETS]
        print(f"   {name:42s} " + "  ".join(f"{b}%: {k}" for b, k in zip(BUDGETS, kept)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latency", choices=("flops", "measured", "both"), default="both")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", type=int, default=8, help="importance batches (of 8 random images)")
    p.add_argument("--backend", default="milp")
    p.add_argument("--cache-dir", default=None, help="latency cache (default: a fresh temporary directory)")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore", ImportanceWarning)
    torch.manual_seed(0)
    model = TimmStyleViT(image_size=args.size, patch=16, dim=192, depth=12, num_heads=3, mlp_hidden=768,
                         num_classes=1000).eval()
    x = torch.randn(1, 3, args.size, args.size)
    data = [(torch.randn(8, 3, args.size, args.size), torch.randint(0, 1000, (8,))) for _ in range(args.batches)]
    kinds = {"flops": ["flops"], "measured": ["measured"], "both": ["flops", "measured"]}[args.latency]
    for kind in kinds:
        if kind == "flops":
            latency = "flops"
        else:
            latency = MeasuredLatency(cache_dir=args.cache_dir or tempfile.mkdtemp(prefix="mdp-latency-"),
                                      progress=False)
        spec, _ = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency=latency, step=16,
                                 mlp_step=64, head_dim_step=8)
        report(spec, "multiply-accumulates" if kind == "flops" else "measured (eager, calibrated)", args.backend)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
