"""Multiply-accumulates as PyTorch's own flop counter sees them, for the tests that check the spec's MACs.

PyTorch's counter has a formula for the CUDA kernels of `scaled_dot_product_attention` but not for the CPU
flash kernel, so attention computed with it would count 0. The same formula is registered for that kernel
(once), so an attention counts the same whichever kernel runs it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _cpu_flash(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


if _CPU_FLASH is not None and _CPU_FLASH not in flop_counter.flop_registry:
    flop_counter.register_flop_formula(_CPU_FLASH)(_cpu_flash)


def counted_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every matmul, convolution and attention of `model(x)` (eval mode, no grad)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops() // 2
