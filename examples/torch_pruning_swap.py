"""A Torch-Pruning user swaps the uniform pruning ratio for an exact, budgeted mdp-opt solve.

    python examples/torch_pruning_swap.py [--ratio 0.5]

The same ResNet-like model and the same Torch-Pruning importance, pruned twice:
1. Torch-Pruning's own `MetaPruner`, every group at the same ratio;
2. mdp-opt: the model's Torch-Pruning groups as a spec, solved exactly at the FLOPs the uniform model
   has, applied back through Torch-Pruning (`spec_from_torch_pruning`, `handle.apply`).
Both keep each group's channels of highest importance; mdp-opt chooses how many per group. For a
latency budget, give `latency=MeasuredLatency()` (timed on your device) instead of "flops".
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch_pruning as tp
from torch import nn

import mdp_opt
from mdp_opt.adapters.torch import spec_from_torch_pruning


class Block(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut (a 1x1 conv-BN when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                                  nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNetLike(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, c_in = [], widths[0]
        for i, w in enumerate(widths):
            blocks += [Block(c_in, w, 1 if i == 0 else 2), Block(w, w, 1)]
            c_in = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def main(ratio: float = 0.5, seed: int = 0) -> dict[str, dict[str, float]]:
    torch.manual_seed(seed)
    model, x = ResNetLike(), torch.randn(1, 3, 32, 32)
    importance = tp.importance.GroupMagnitudeImportance()

    # 1. Torch-Pruning: one ratio for every group
    uniform = copy.deepcopy(model)
    tp.pruner.MetaPruner(uniform, x, importance=importance, pruning_ratio=ratio, ignored_layers=[uniform.fc]).step()

    # 2. mdp-opt: the same groups and importance, the most importance that fits the same FLOPs, exactly
    spec, handle = spec_from_torch_pruning(model, x, importance=importance, latency="flops", step=8)
    theirs = handle.result_of(uniform)                 # the uniform model as a configuration of the spec
    result = mdp_opt.solve(spec, budget=theirs.costs["latency"])
    exact = handle.apply(result)

    rows = {}
    for name, pruned, config in (("dense", model, None), (f"Torch-Pruning ratio {ratio:g}", uniform, theirs),
                                 ("mdp-opt exact", exact, result)):
        macs, params = tp.utils.count_ops_and_params(pruned, x)
        rows[name] = {"macs": macs, "params": params, "importance kept": 1.0 if config is None else config.objective}
    print(f"{'model':28} {'MACs (M)':>9} {'params (k)':>11} {'importance kept':>16}")
    for name, row in rows.items():
        print(f"{name:28} {row['macs'] / 1e6:9.2f} {row['params'] / 1e3:11.1f} {row['importance kept']:16.4f}")
    print(f"\nmdp-opt: {result.status.value} in {result.wall_time:.2f} s; kept channels per group:")
    print(handle.describe(result))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5, help="Torch-Pruning's uniform pruning ratio")
    main(parser.parse_args().ratio)
