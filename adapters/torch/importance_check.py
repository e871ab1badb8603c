"""Is the importance good enough to rank channels? A check run by the spec builders.

Two failures make an "optimal" answer meaningless without any error:
- **Zero scores.** A layer whose channels score 0 is pruned first and for free; a removable
  block whose layers all score 0 is removed at every budget (with zero-initialised BatchNorm
  gammas in residual blocks, a common initialisation, every block scores 0 and the answer
  keeps a few percent of the model). Zero scores come from such initialisations, dead ReLUs,
  or layers the loss does not reach.
- **Too few data.** Taylor scores are sums over batches of squared batch gradients, so one
  batch, or a few small ones, rank channels by noise. The scores are accumulated in two
  halves (even and odd batches; their sum is exactly the usual total), and each layer's
  channel ranking in one half is compared with the other (Spearman correlation). Layers
  whose halves disagree (correlation below `MIN_AGREEMENT`) are named; with one batch there
  is nothing to compare, which is itself reported.

`check_importance` returns a JSON-ready record for `spec.meta["importance_check"]` and
warns with an `ImportanceWarning` (a `UserWarning`; silence it with
`warnings.simplefilter("ignore", ImportanceWarning)`) naming the layers and the fix.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Generic, Hashable, Iterable, Mapping, TypeVar

import numpy as np
import torch

from mdp_opt import Spec

from .importance import check_pair

Key = TypeVar("Key", bound=Hashable)

ZERO_SHARE = 0.5          # a layer is "mostly zero" when at least this share of its channels scores 0
MIN_AGREEMENT = 0.5       # split-half Spearman correlation below which a layer's ranking is noise
UNSTABLE_SHARE = 0.25     # warn when at least this share of the compared layers rank by noise
SHOWN = 6                 # layers named in a warning (all are in the meta record)
FIX = ("score a trained model (zero-initialised BatchNorm gammas are an initialisation trick), give more "
       "(inputs, targets) batches to data=, pass importance= with your own scores, or keep layers and blocks "
       "out of the search with ignore= / blocks=None")


class ImportanceWarning(UserWarning):
    """The importance scores cannot rank channels reliably (zero scores, or too few data); the message names
    the layers and the fix, and `spec.meta["importance_check"]` has the details."""


@dataclass(frozen=True)
class Scoring(Generic[Key]):
    """Scores accumulated over data in two halves (even and odd batches); `totals` is their sum."""

    totals: dict[Key, np.ndarray]
    halves: tuple[dict[Key, np.ndarray], dict[Key, np.ndarray]]
    batches: int
    samples: int


def scores_by_halves(score: Callable[[list[Any]], Mapping[Key, np.ndarray]], data: Iterable[Any]) -> Scoring[Key]:
    """Run `score([batch])` on every batch and sum the results in two halves (even and odd batches).

    For Taylor scores (sums over batches) the totals are the scores of all the data, as one call on
    all of it would give. Samples are counted from the inputs' first axis."""
    halves: tuple[dict[Key, np.ndarray], dict[Key, np.ndarray]] = ({}, {})
    batches = samples = 0
    for i, batch in enumerate(data):
        check_pair(i, batch)
        half = halves[i % 2]
        for key, value in score([batch]).items():
            half[key] = half[key] + value if key in half else np.asarray(value, dtype=np.float64).copy()
        batches += 1
        inputs = batch[0]
        samples += int(inputs.shape[0]) if isinstance(inputs, torch.Tensor) and inputs.dim() > 0 else 1
    if batches == 0:
        raise ValueError("data: no batches; give at least one (inputs, targets) batch")
    even, odd = halves
    totals = {k: even[k] + odd[k] if k in odd else even[k].copy() for k in even}
    return Scoring(totals, halves, batches, samples)


def with_importance_check(spec: Spec, scores: Mapping[str, np.ndarray], scoring: Scoring | None,
                          names: Callable[[Any], str] = str) -> Spec:
    """`spec` with `meta["importance_check"]` from `check_importance` (which warns when needed).
    `scores`: per-channel scores by layer (or unit) key; `names` turns a key into the name shown."""
    halves = None
    if scoring is not None:
        halves = tuple({names(k): v for k, v in h.items()} for h in scoring.halves)
    record = check_importance({names(k): v for k, v in scores.items()}, spec, halves=halves,
                              batches=None if scoring is None else scoring.batches,
                              samples=None if scoring is None else scoring.samples)
    return spec.replace(meta={**spec.meta, "importance_check": record})


def check_importance(scores: Mapping[str, np.ndarray], spec: Spec, *,
                     halves: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]] | None = None,
                     batches: int | None = None, samples: int | None = None, warn: bool = True) -> dict[str, Any]:
    """Check per-channel `scores` ({layer or unit name: scores}) and the blocks of `spec` (from its
    objective), warn with `ImportanceWarning` when they cannot rank channels, and return the record
    for `spec.meta["importance_check"]`. `halves`, `batches` and `samples` come from `scores_by_halves`
    (None when the user gave the scores)."""
    record: dict[str, Any] = {"source": "data" if halves is not None else "given"}
    problems: list[str] = []

    channels = sum(int(np.size(s)) for s in scores.values())
    tiny = 1e-12 * max((float(np.max(s)) for s in scores.values() if np.size(s)), default=0.0)
    zero_share = {name: float(np.mean(np.asarray(s) <= tiny)) for name, s in scores.items() if np.size(s)}
    mostly_zero = sorted((n for n, z in zero_share.items() if z >= ZERO_SHARE), key=lambda n: -zero_share[n])
    record["zero_share"] = (sum(zero_share[n] * np.size(scores[n]) for n in zero_share) / channels) if channels else 0.0
    record["mostly_zero_layers"] = {n: round(zero_share[n], 4) for n in mostly_zero}
    if mostly_zero:
        problems.append(f"{len(mostly_zero)} of {len(zero_share)} scored layers have at least "
                        f"{ZERO_SHARE:.0%} zero scores ({_names(mostly_zero, lambda n: f'{zero_share[n]:.0%} zero')}); "
                        "their channels are pruned first, for free")

    worth = block_importance(spec)
    total = sum(float(t.table[-1]) if t.table.ndim else float(t.table) for t in spec.objective) or 1.0
    free = [b for b, w in worth.items() if w <= 1e-9 * abs(total)]
    record["zero_blocks"] = free
    if free:
        problems.append(f"{len(free)} of {len(worth)} removable blocks score 0 in total ({_names(free)}); "
                        "every budget below 100% removes them at no loss of importance")

    if halves is not None:
        record["batches"], record["samples"] = batches, samples
        if batches is not None and batches < 2:
            record["rank_agreement"] = None
            problems.append(f"the importance comes from {batches} batch ({samples} samples): one batch ranks "
                            "channels by noise, and its stability cannot be checked")
        else:
            agreement = split_half_agreement(halves[0], halves[1])
            low = sorted((n for n, a in agreement.items() if a < MIN_AGREEMENT), key=lambda n: agreement[n])
            record["rank_agreement"] = {"median": float(np.median(list(agreement.values()))) if agreement else None,
                                        "low": {n: round(agreement[n], 3) for n in low}, "compared": len(agreement)}
            if agreement and len(low) >= UNSTABLE_SHARE * len(agreement):
                problems.append(f"{len(low)} of {len(agreement)} layers rank their channels differently on the two "
                                f"halves of the {batches} batches ({samples} samples) "
                                f"({_names(low, lambda n: f'correlation {agreement[n]:.2f}')}): too few data to rank "
                                "them")
    record["ok"] = not problems
    if problems:
        record["problems"] = problems
        record["fix"] = FIX
        if warn:
            warnings.warn(ImportanceWarning("importance: " + "; ".join(problems) + f". Fix: {FIX}. Details in "
                                            "spec.meta['importance_check']; silence with warnings.simplefilter("
                                            "'ignore', mdp_opt.adapters.torch.ImportanceWarning)"), stacklevel=4)
    return record


def block_importance(spec: Spec) -> dict[str, float]:
    """Block name -> the importance its objective terms hold at full width (what removing it loses)."""
    worth = {b: 0.0 for b in spec.block_names}
    for term in spec.objective:
        if term.block is not None:
            worth[term.block] += float(term.table[(-1,) * term.table.ndim])
    return worth


def split_half_agreement(first: Mapping[str, np.ndarray], second: Mapping[str, np.ndarray], min_channels: int = 4
                         ) -> dict[str, float]:
    """Spearman correlation of each layer's channel scores between the two halves (layers with at least
    `min_channels` channels and some non-zero score in both halves)."""
    out = {}
    for name, a in first.items():
        b = second.get(name)
        a = np.asarray(a, dtype=np.float64).ravel()
        if b is None or a.size < min_channels:
            continue
        b = np.asarray(b, dtype=np.float64).ravel()
        if not (np.ptp(a) > 0 and np.ptp(b) > 0):
            continue
        out[name] = float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (so a block of equal scores does not look ordered)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size)
    ranks[order] = np.arange(x.size)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def _names(names: list[str], detail: Callable[[str], str] | None = None) -> str:
    shown = [f"{n}: {detail(n)}" if detail else n for n in names[:SHOWN]]
    return ", ".join(shown) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
