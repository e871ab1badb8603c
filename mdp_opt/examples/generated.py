"""Synthetic pruning problems shaped like real networks: ResNet, MobileNet-V2, ViT, plain chains.

    spec = mdp_opt.examples.make("resnet50", seed=0, choices=32)

Every generator is deterministic given `seed`. Latency tables (microseconds of a synthetic
CPU) grow with FLOPs, carry the staircase real CPU kernels show (channel counts are
padded up to a multiple of 16), plus the memory traffic of the activations and a fixed
per-layer overhead; importance tables are cumulative sums of heavy-tailed per-channel
Taylor-like scores, one term per layer share, gated by the layer's block (MDP's split),
with one random weight per block so that some blocks matter little. At aggressive
budgets (15-30% of full latency) optimal answers remove some blocks. By default every table is rounded to integers
(as in the MDP authors' solver inputs, so exact backends can prove optimality); pass
`integer=False` for float data. `params=True` adds an exact parameter count as a second
resource, `flops=True` an exact FLOP count as another (FLOPs weigh early, high-resolution layers,
parameters late, wide ones: the tables conflict). `monotone=False` multiplies every latency entry
by its own random factor (kernels that are slower at some widths than at larger ones), and
`ties=True` makes every channel, layer and block nearly equally important (near-tie optima). The
spec's `budgets` holds `budget` (default 0.5) times the full latency. `hard(seed)` draws one
instance of a family of harder problems (tight budgets over two or three resources).
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable, Sequence

import numpy as np

from ..evaluate import evaluate
from ..spec import Dim, Spec, SpecError, Term, importance_table

STAIRCASE = 16             # CPU kernels process channels in blocks of this many
THROUGHPUT = 50_000.0      # FLOP per microsecond of the synthetic CPU (50 GFLOP/s)
DEPTHWISE_SLOWDOWN = 8.0   # depthwise convolutions are memory bound
BANDWIDTH = 10_000.0       # bytes per microsecond moved to and from memory (10 GB/s)
OVERHEAD_US = 50.0         # fixed cost of launching one layer
CLASSES = 1000


def _padded(channels: np.ndarray) -> np.ndarray:
    return np.ceil(channels / STAIRCASE) * STAIRCASE


class _Builder:
    """Accumulates dims, blocks and terms; draws every random number from one generator in a fixed order."""

    def __init__(self, seed: int, choices: int, integer: bool, params: bool, flops: bool = False,
                 monotone: bool = True, ties: bool = False) -> None:
        _check_sizes(choices=choices)
        for key, value in (("params", params), ("flops", flops), ("monotone", monotone), ("ties", ties),
                           ("integer", integer)):
            if not isinstance(value, bool):
                raise SpecError(f"{key}: expected True or False, got {value!r}")
        self.rng = np.random.default_rng(seed)
        self.choices = choices
        self.integer = integer
        self.with_params = params
        self.with_flops = flops
        self.monotone = monotone
        self.ties = ties
        self.dims: list[Dim] = []
        self.widths: dict[str, int] = {}
        self.blocks: list[str] = []
        self.block_weight: dict[str, float] = {}
        self.objective: list[Term] = []
        self.latency: list[Term] = []
        self.params: list[Term] = []
        self.flops: list[Term] = []

    # ---- structure -------------------------------------------------------------------
    def dim(self, name: str, width: int, choices: int | None = None) -> str:
        """A prunable width with up to `choices` evenly spaced kept counts ending at `width`."""
        n = min(choices or self.choices, width)
        kept = sorted({math.ceil(width * i / n) for i in range(1, n + 1)})
        self.dims.append(Dim(name, tuple(kept)))
        self.widths[name] = width
        return name

    def block(self, name: str) -> str:
        """A removable unit; its layers' importance shares all carry one random factor (some blocks matter little)."""
        self.blocks.append(name)
        self.block_weight[name] = 1.0 + 0.01 * float(self.rng.random()) if self.ties else float(
            self.rng.lognormal(0.0, 1.3))
        return name

    def kept(self, dim: str) -> np.ndarray:
        return np.array(next(d.choices for d in self.dims if d.name == dim), dtype=np.float64)

    # ---- cost terms ------------------------------------------------------------------
    def cost(self, dims: Sequence[str], latency: Callable[..., np.ndarray], params: Callable[..., np.ndarray] | None,
             block: str | None, flops: Callable[..., np.ndarray] | None = None) -> None:
        """Latency (parameter, FLOP) tables over `dims`, from functions of the kept counts (broadcast grids)."""
        grids = np.meshgrid(*[self.kept(d) for d in dims], indexing="ij") if dims else []
        efficiency = float(self.rng.lognormal(0.0, 1.3))
        variable = efficiency * np.broadcast_to(latency(*grids), _shape(grids))
        if not self.monotone:
            variable = variable * self.rng.lognormal(0.0, 0.3, _shape(grids))
        table = OVERHEAD_US + variable
        self.latency.append(Term(tuple(dims), self._number(np.broadcast_to(table, _shape(grids))), block))
        if self.with_params and params is not None:
            self.params.append(Term(tuple(dims), np.broadcast_to(params(*grids), _shape(grids)), block))
        if self.with_flops and flops is not None:
            self.flops.append(Term(tuple(dims), np.broadcast_to(flops(*grids), _shape(grids)), block))

    def conv(self, out: str | int, inp: str | int, kernel: int, hw: int, block: str | None) -> None:
        """A dense k x k convolution producing an hw x hw map; `out`/`inp` name a dim or give a fixed count."""
        dims = [d for d in (out, inp) if isinstance(d, str)]

        def channels(grids: tuple[np.ndarray, ...]) -> tuple[Any, Any]:
            it = iter(grids)
            return tuple(next(it) if isinstance(d, str) else float(d) for d in (out, inp))

        def latency(*grids: np.ndarray) -> np.ndarray:
            c_out, c_in = channels(grids)
            compute = 2.0 * hw * hw * kernel * kernel * _padded(c_out) * _padded(c_in) / THROUGHPUT
            return compute + 4.0 * hw * hw * (c_in + c_out) / BANDWIDTH     # float32 activations in and out

        def params(*grids: np.ndarray) -> np.ndarray:
            c_out, c_in = channels(grids)
            return c_out * c_in * kernel * kernel + 2 * c_out  # weights + batch-norm affine

        def flops(*grids: np.ndarray) -> np.ndarray:
            c_out, c_in = channels(grids)
            return 2.0 * hw * hw * kernel * kernel * c_out * c_in

        self.cost(dims, latency, params, block, flops)

    def classifier(self, inp: str) -> None:
        """The final linear layer from `inp` to the class scores (weights and bias, no batch norm)."""
        self.cost([inp], lambda c: 2.0 * _padded(c) * CLASSES / THROUGHPUT, lambda c: c * CLASSES + CLASSES, None,
                  lambda c: 2.0 * c * CLASSES)

    def depthwise(self, dim: str, kernel: int, hw: int, block: str | None) -> None:
        self.cost([dim], lambda c: 2.0 * hw * hw * kernel * kernel * _padded(c) * DEPTHWISE_SLOWDOWN / THROUGHPUT
                  + 4.0 * hw * hw * 2 * c / BANDWIDTH,
                  lambda c: c * kernel * kernel + 2 * c, block, lambda c: 2.0 * hw * hw * kernel * kernel * c)

    # ---- importance ------------------------------------------------------------------
    def importance(self, dim: str, blocks: Sequence[str | None], units: int | None = None) -> None:
        """One objective term per layer share of `dim` (layers gated by `blocks`), channels ranked by their total.

        `units` is the number of scored units when a dim counts groups (heads) rather than channels.
        """
        width = units or self.widths[dim]
        shares = []
        for block in blocks:
            raw = 1.0 + 0.001 * self.rng.random(width) if self.ties else self.rng.lognormal(0.0, 1.2, width)
            weight = self.block_weight.get(block, 1.0) if block is not None else 1.0
            share = 1.0 + 0.01 * self.rng.random() if self.ties else self.rng.lognormal(0.0, 1.3)
            shares.append(raw / raw.sum() * 30_000.0 * weight * share)
        choices = [int(k) for k in self.kept(dim)]
        if len(shares) == 1:
            tables = [importance_table(shares[0], choices)]
        else:
            order = np.argsort(-np.sum(shares, axis=0), kind="stable")
            tables = [np.concatenate([[0.0], np.cumsum(s[order])])[choices] for s in shares]
        for block, table in zip(blocks, tables):
            self.objective.append(Term((dim,), self._number(table), block))

    # ---- result ----------------------------------------------------------------------
    def _number(self, table: np.ndarray) -> np.ndarray:
        return np.rint(table) if self.integer else np.asarray(table, dtype=np.float64)

    def build(self, name: str, budget: float, meta: dict[str, Any]) -> Spec:
        if not (isinstance(budget, (int, float)) and 0 < budget <= 1):
            raise SpecError(f"budget: expected a fraction of the full latency in (0, 1], got {budget!r}")
        costs = {"latency": self.latency}
        if self.with_params:
            costs["params"] = self.params
        if self.with_flops:
            costs["flops"] = self.flops
        spec = Spec(tuple(self.dims), tuple(self.objective), costs, tuple(self.blocks), name=name,
                    meta={"generator": "mdp_opt.examples", **meta,
                          "units": {"latency": "microseconds (synthetic CPU)", "params": "parameters",
                                    "flops": "floating-point operations",
                                    "objective": "Taylor-like importance (synthetic)"}})
        limit = budget * spec.full_cost("latency")
        return spec.replace(budgets={"latency": math.floor(limit) if self.integer else limit})


def _check_sizes(minimum: int = 1, **sizes: Any) -> None:
    """Every size must be an integer >= `minimum`; the error names the argument."""
    for key, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise SpecError(f"{key}: expected an integer >= {minimum}, got {value!r}")


def _shape(grids: Sequence[np.ndarray]) -> tuple[int, ...]:
    return grids[0].shape if grids else ()


# ---- families -------------------------------------------------------------------------------

def resnet(*, seed: int = 0, blocks: Sequence[int] = (3, 4, 6, 3), choices: int = 16, width: int = 64,
           image_size: int = 224, integer: bool = True, params: bool = False, flops: bool = False,
           monotone: bool = True, ties: bool = False, budget: float = 0.5, name: str = "resnet") -> Spec:
    """Bottleneck ResNet: per stage one residual dim shared by its conv3 outputs and downsample;
    per block conv1/conv2 dims; every block but the first of a stage (projection shortcut) removable."""
    if not isinstance(blocks, (tuple, list)) or not blocks:
        raise SpecError(f"blocks: expected a non-empty list of block counts per stage, got {blocks!r}")
    _check_sizes(**{f"blocks[{s}]": n for s, n in enumerate(blocks)}, width=width)
    _check_sizes(2 ** (len(blocks) + 1), image_size=image_size)   # the last stage's map is at least 1 x 1
    b = _Builder(seed, choices, integer, params, flops, monotone, ties)
    hw = image_size // 4
    prev = b.dim("stem", width)
    b.conv(prev, 3, 7, image_size // 2, None)
    b.importance(prev, [None])
    for s, n in enumerate(blocks):
        mid, out_hw = width * 2 ** s, hw // (2 ** s)
        res = b.dim(f"layer{s + 1}.res", 4 * mid)
        res_shares: list[str | None] = [None, None]   # downsample and the first block's conv3
        for i in range(n):
            prefix = f"layer{s + 1}.{i}"
            gate = None if i == 0 else b.block(prefix)
            inp, in_hw = (prev, out_hw * (2 if s > 0 else 1)) if i == 0 else (res, out_hw)
            c1, c2 = b.dim(f"{prefix}.conv1", mid), b.dim(f"{prefix}.conv2", mid)
            b.conv(c1, inp, 1, in_hw, gate)
            b.conv(c2, c1, 3, out_hw, gate)
            b.conv(res, c2, 1, out_hw, gate)
            if i == 0:
                b.conv(res, prev, 1, out_hw, None)   # downsample (projection shortcut)
            else:
                res_shares.append(gate)
            b.importance(c1, [gate])
            b.importance(c2, [gate])
        b.importance(res, res_shares)
        prev = res
    b.classifier(prev)
    return b.build(name, budget, {"family": "resnet", "seed": seed, "blocks": list(blocks), "choices": choices,
                                  "width": width, "image_size": image_size})


MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))


def mobilenetv2(*, seed: int = 0, stages: int = 7, choices: int = 16, image_size: int = 224, integer: bool = True,
                params: bool = False, flops: bool = False, monotone: bool = True, ties: bool = False,
                budget: float = 0.5, name: str = "mobilenetv2") -> Spec:
    """MobileNet-V2: inverted residuals with an expand dim per block, arity-1 depthwise terms, one output dim
    per stage shared by its residual blocks, which are removable (stride 1 and same width)."""
    if not isinstance(stages, int) or not 1 <= stages <= len(MOBILENET_V2):
        raise SpecError(f"stages: expected 1..{len(MOBILENET_V2)} inverted-residual stages, got {stages!r}")
    _check_sizes(32, image_size=image_size)                  # five stride-2 stages leave at least 1 x 1
    b = _Builder(seed, choices, integer, params, flops, monotone, ties)
    hw = image_size // 2
    prev = b.dim("stem", 32)
    b.conv(prev, 3, 3, hw, None)
    b.importance(prev, [None])
    for s, (expand, width, n, stride) in enumerate(MOBILENET_V2[:stages]):
        out = b.dim(f"stage{s + 1}.out", width)
        shares: list[str | None] = []
        for i in range(n):
            prefix = f"stage{s + 1}.{i}"
            gate = None if i == 0 else b.block(prefix)
            inp, in_hw = (prev, hw) if i == 0 else (out, hw // stride)
            if expand == 1:
                hidden = inp       # no expansion: the depthwise conv runs on its input's channels
            else:
                hidden = b.dim(f"{prefix}.expand", expand * b.widths[inp])
                b.conv(hidden, inp, 1, in_hw, gate)
            b.depthwise(hidden, 3, hw // stride, gate)
            b.conv(out, hidden, 1, hw // stride, gate)
            if expand != 1:
                b.importance(hidden, [gate])
            shares.append(gate)
        b.importance(out, shares)
        hw, prev = hw // stride, out
    head = b.dim("head", 1280)
    b.conv(head, prev, 1, hw, None)
    b.classifier(head)
    b.importance(head, [None])
    return b.build(name, budget, {"family": "mobilenetv2", "seed": seed, "stages": stages, "choices": choices,
                                  "image_size": image_size})


def vit(*, seed: int = 0, blocks: int = 12, embed: int = 768, heads: int = 12, head_dim: int = 64,
        mlp_ratio: int = 4, tokens: int = 197, choices: int = 16, integer: bool = True, params: bool = False,
        flops: bool = False, monotone: bool = True, ties: bool = False, budget: float = 0.5, name: str = "vit") -> Spec:
    """Vision transformer: one global embedding dim; per block heads, q/k and v dims per head and MLP hidden;
    arity-3 attention latency over (embedding, heads, head dim); removable attention and MLP sub-blocks."""
    _check_sizes(blocks=blocks, embed=embed, heads=heads, head_dim=head_dim, mlp_ratio=mlp_ratio, tokens=tokens)
    b = _Builder(seed, choices, integer, params, flops, monotone, ties)
    n = float(tokens)
    e = b.dim("embed", embed)
    b.cost([e], lambda c: 2.0 * n * 3 * 16 * 16 * _padded(c) / THROUGHPUT,        # patch embedding
           lambda c: 3 * 16 * 16 * c + c + n * c + c, None,                       # + position and class tokens
           lambda c: 2.0 * n * 3 * 16 * 16 * c)
    embed_shares: list[str | None] = [None]
    for i in range(blocks):
        attn, mlp = b.block(f"block{i}.attn"), b.block(f"block{i}.mlp")
        h = b.dim(f"block{i}.heads", heads)
        qk, v = b.dim(f"block{i}.qk_dim", head_dim), b.dim(f"block{i}.v_dim", head_dim)
        hidden = b.dim(f"block{i}.mlp_hidden", mlp_ratio * embed)
        # LayerNorm and residual add (five float32 passes over the tokens), q and k projections,
        # scores q k^T and their softmax (one pass in, one out)
        b.cost([e, h, qk], lambda c, h_, d: 2.0 * n * (2 * _padded(c) * _padded(h_ * d) + n * h_ * d) / THROUGHPUT
               + (20.0 * n * c + 8.0 * n * n * h_) / BANDWIDTH,
               lambda c, h_, d: 2 * (c * h_ * d + h_ * d) + 2 * c, attn,              # + the block's LayerNorm
               lambda c, h_, d: 2.0 * n * (2 * c * h_ * d + n * h_ * d))
        # v projection, attention-weighted sum and the output projection
        b.cost([e, h, v], lambda c, h_, d: 2.0 * n * (2 * _padded(c) * _padded(h_ * d) + n * h_ * d) / THROUGHPUT,
               lambda c, h_, d: 2 * c * h_ * d + h_ * d + c, attn,
               lambda c, h_, d: 2.0 * n * (2 * c * h_ * d + n * h_ * d))
        # LayerNorm and residual add, two linear layers, GELU (one pass in, one out)
        b.cost([e, hidden], lambda c, m: 4.0 * n * _padded(c) * _padded(m) / THROUGHPUT
               + (20.0 * n * c + 8.0 * n * m) / BANDWIDTH,
               lambda c, m: 2 * c * m + m + c + 2 * c, mlp, lambda c, m: 4.0 * n * c * m)
        b.importance(h, [attn], units=heads)
        b.importance(qk, [attn])
        b.importance(v, [attn])
        b.importance(hidden, [mlp])
        embed_shares += [attn, mlp]
    b.cost([e], lambda c: 8.0 * n * c / THROUGHPUT, lambda c: 2 * c, None)          # the final LayerNorm
    b.classifier(e)
    b.importance(e, embed_shares)
    return b.build(name, budget, {"family": "vit", "seed": seed, "blocks": blocks, "embed": embed, "heads": heads,
                                  "head_dim": head_dim, "mlp_ratio": mlp_ratio, "tokens": tokens,
                                  "choices": choices})


def chain(*, seed: int = 0, depth: int = 16, width: int = 256, choices: int = 16, image_size: int = 56,
          integer: bool = True, params: bool = False, flops: bool = False, monotone: bool = True, ties: bool = False,
          budget: float = 0.5, name: str = "chain") -> Spec:
    """A plain chain of 3x3 convolutions (VGG-like, no blocks): arity-2 latency between neighbours."""
    _check_sizes(depth=depth, width=width, image_size=image_size)
    b = _Builder(seed, choices, integer, params, flops, monotone, ties)
    prev: str | int = 3
    for i in range(depth):
        d = b.dim(f"conv{i}", width)
        b.conv(d, prev, 3, image_size, None)
        b.importance(d, [None])
        prev = d
    return b.build(name, budget, {"family": "chain", "seed": seed, "depth": depth, "width": width,
                                  "choices": choices, "image_size": image_size})


def hard(*, seed: int = 0, name: str = "hard") -> Spec:
    """One instance of a family of harder problems, every resource budgeted in `spec.budgets`.

    Alternately ResNet-101 (even seeds) and ViT-B shapes (odd seeds), 16 choices per dim; latency and
    parameters (and FLOPs when seed // 2 is odd), with budgets drawn per seed: latency at 5-15% of its full
    cost (at least 1.2 times that of the narrowest configuration, so that it stays feasible), parameters at
    15-50% and FLOPs at 10-40%; non-monotone latency tables when seed % 3 == 1, near-tie importances
    when seed % 5 == 2."""
    _check_sizes(0, seed=seed)
    rng = np.random.default_rng([seed, 18])
    options = dict(seed=seed, params=True, flops=(seed // 2) % 2 == 1, monotone=seed % 3 != 1, ties=seed % 5 == 2)
    spec = (resnet(blocks=(3, 4, 23, 3), name=name, **options) if seed % 2 == 0
            else vit(name=name, **options))
    narrowest = {d.name: 0 for d in spec.dims}
    floor = evaluate(spec, narrowest, {b: False for b in spec.block_names}).costs
    fractions = {"latency": rng.uniform(0.05, 0.15), "params": rng.uniform(0.15, 0.5), "flops": rng.uniform(0.1, 0.4)}
    budgets = {r: float(math.floor(max(fractions[r] * spec.full_cost(r), 1.2 * floor[r]))) for r in spec.costs}
    return spec.replace(budgets=budgets, meta={**spec.meta, "family": "hard", "budget_fractions": {
        r: budgets[r] / spec.full_cost(r) for r in budgets}, "monotone": options["monotone"], "ties": options["ties"]})


GENERATORS: dict[str, Callable[..., Spec]] = {
    "resnet50": functools.partial(resnet, blocks=(3, 4, 6, 3)),
    "resnet101": functools.partial(resnet, blocks=(3, 4, 23, 3)),
    "resnet152": functools.partial(resnet, blocks=(3, 8, 36, 3)),
    "mobilenetv2": functools.partial(mobilenetv2),
    "vit12": functools.partial(vit),
    "vit-tiny": functools.partial(vit, embed=192, heads=3),
    "vit-l": functools.partial(vit, blocks=24, embed=1024, heads=16),
    "vit-h": functools.partial(vit, blocks=32, embed=1280, heads=16, head_dim=80),
    "chain": functools.partial(chain),
}
NAMES: tuple[str, ...] = tuple(GENERATORS)


def make(name: str, seed: int = 0, **sizes: Any) -> Spec:
    """The generated spec `name` (one of `NAMES`) for `seed`; `sizes` override the family's defaults
    (e.g. `choices=32`, `blocks=(1, 1)`, `params=True`, `integer=False`, `budget=0.3`)."""
    generator = GENERATORS.get(name)
    if generator is None:
        raise SpecError(f"example {name!r}: unknown; choose one of {list(NAMES)}")
    accepted = set(inspect.signature(generator.func).parameters) - {"seed", "name"}
    unknown = sorted(set(sizes) - accepted)
    if unknown:
        raise SpecError(f"example {name!r}: size {unknown[0]!r} not understood; it accepts {sorted(accepted)}")
    label = ",".join([f"seed={seed}"] + [f"{k}={v}" for k, v in sorted(sizes.items())])
    return generator(seed=seed, name=f"{name}[{label}]", **sizes)
