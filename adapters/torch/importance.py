"""Channel importance and the objective terms built from it.

MDP's criterion: first-order Taylor scores per channel, taken on the BN that follows a
layer when there is one (`(gamma * dL/dgamma + beta * dL/dbeta)^2`, summed over batches),
else on the layer's weights; scaled so the whole model's scores sum to 1 (`scores` adds them up
per dim and block). Each block's share of a dim becomes its own objective term, so removing a
block removes exactly its share. Every share is read through the SAME ranking (the dim's total
score), which is the ranking `apply` keeps channels by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from mdp_opt import Term



def taylor_scores(model: nn.Module, layers: Iterable[str], data: Iterable[Any],
                  loss_fn: Callable[[Any, Any], torch.Tensor]) -> dict[str, np.ndarray]:
    """Per-channel first-order Taylor scores of `layers`, accumulated over the `(inputs, targets)` batches.

    Uses `torch.autograd.grad`, so the model's `.grad` fields are left alone.
    """
    modules = dict(model.named_modules())
    names = list(layers)
    params = [p for n in names for p in scored_params(modules[n])]
    device = params[0].device if params else torch.device("cpu")
    totals = {n: torch.zeros(_channels(modules[n]), dtype=torch.float64, device=device) for n in names}
    batches = 0
    for loss in batch_losses(model, data, loss_fn, device):
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grad_of = {id(p): g for p, g in zip(params, grads)}
        for n in names:
            totals[n] += channel_taylor([p.detach() * grad_of[id(p)] for p in scored_params(modules[n])
                                         if grad_of[id(p)] is not None], totals[n]) ** 2
        batches += 1
    if batches == 0:
        raise ValueError("data: no batches; give at least one (inputs, targets) batch")
    return {n: t.cpu().numpy() for n, t in totals.items()}


def check_pair(i: int, batch: Any) -> None:
    """A clear error unless `data[i]` is an `(inputs, targets)` pair."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ValueError(f"data[{i}]: expected an (inputs, targets) pair, got {type(batch).__name__}")


def batch_losses(model: nn.Module, data: Iterable[Any], loss_fn: Callable[[Any, Any], torch.Tensor],
                 device: torch.device) -> Iterator[torch.Tensor]:
    """The scalar loss of each `(inputs, targets)` batch of `data` (tensors moved to `device`), its graph
    built with gradients enabled; a clear error for a batch that is not a pair or a loss that is not a scalar."""
    for i, batch in enumerate(data):
        check_pair(i, batch)
        inputs, targets = (_to(x, device) for x in batch)
        with torch.enable_grad():
            loss = loss_fn(model(inputs), targets)
        if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
            raise ValueError("loss_fn: must return a scalar tensor")
        yield loss


def normalized(scores: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Scores scaled to sum to 1 over all layers, so the unpruned model is worth 1 and a result's
    objective is the fraction of importance kept (raw Taylor scores are tiny, which hurts solver tolerances)."""
    total = float(sum(s.sum() for s in scores.values()))
    if not total > 0:
        raise ValueError("data: every Taylor score is zero (no gradient reached the scored layers); "
                         "check loss_fn and that the model's parameters require grad")
    return {n: s / total for n, s in scores.items()}


@dataclass(frozen=True)
class DimImportance:
    """`order`: the dim's channels (root indices) by decreasing total score;
    `shares`: block (None when outside any block) -> per-channel scores of that block's layers."""

    order: np.ndarray
    shares: dict[str | None, np.ndarray]


def objective_terms(dim_name: str, choices: tuple[int, ...], imp: DimImportance) -> list[Term]:
    """One arity-1 term per block share: entry k = that share summed over the dim's top-k channels."""
    terms = []
    for block, share in imp.shares.items():
        cum = np.concatenate([[0.0], np.cumsum(share[imp.order])])
        terms.append(Term((dim_name,), cum[np.asarray(choices)], block))
    return terms


def channel_taylor(products: Iterable[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """One batch's per-channel first-order Taylor sum of a layer, before squaring: the products
    `parameter * gradient` of its scored parameters (see `scored_params`), each summed over all but its first
    (channel) axis, added up (float64, shaped like `like`). Square it and add over batches for MDP's score."""
    out = torch.zeros_like(like)
    for product in products:
        out += product.reshape(product.shape[0], -1).sum(dim=1).double()
    return out


def scored_params(m: nn.Module) -> list[nn.Parameter]:
    """The parameters whose Taylor products score a layer's output channels: its weight and bias (when present)."""
    return [p for p in (m.weight, getattr(m, "bias", None)) if p is not None]


def _channels(m: nn.Module) -> int:
    return m.weight.shape[0]


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (list, tuple)):
        return type(x)(_to(v, device) for v in x)
    return x
