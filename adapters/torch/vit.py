"""Former entry point for vision transformers, kept so existing code runs: `build_spec` now takes every
option (`mlp_step`, `head_step`, `head_dim_step`, `heads`, ...) for every family."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from mdp_opt import Spec

from .apply import PruningHandle
from .spec_builder import build_spec

ViTPruningHandle = PruningHandle


def build_vit_spec(model: nn.Module, example_input: torch.Tensor, **options: Any) -> tuple[Spec, PruningHandle]:
    """Deprecated: use `build_spec`, which recognises transformers by itself. This is
    `build_spec(model, example_input, family="transformer", **options)`."""
    warnings.warn("build_vit_spec is deprecated: build_spec takes every option and recognises transformers",
                  DeprecationWarning, stacklevel=2)
    return build_spec(model, example_input, family="transformer", **options)
