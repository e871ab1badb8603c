"""Real torchvision, timm and Hugging Face transformers models through `build_spec` (random weights).

Each test is skipped, saying why, where its library is not installed; none of them is required.
Per model: the family that recognises it, which widths a slimmed copy showed to be hard-coded, a round trip at
50% of its MACs (the slimmed model runs, keeps its output shape and has exactly the parameters the spec
predicts) and the keep-everything equality. Run them with e.g. `pip install torchvision timm transformers` beside the CPU torch.
"""

from __future__ import annotations

import importlib

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import mdp_opt  # noqa: E402
from mdp_opt import Answer, Status  # noqa: E402
from mdp_opt.adapters.torch import build_spec  # noqa: E402
from mdp_opt.solve import verify  # noqa: E402


def library(name: str):
    """The library, or a skip that says why it cannot be used."""
    try:
        return importlib.import_module(name)
    except Exception as e:            # not installed, or installed for another torch build
        pytest.skip(f"{name} is not usable here ({type(e).__name__}: {str(e)[:80]}); this lane runs real "
                    f"{name} models where it is installed")


class Logits(nn.Module):
    """A Hugging Face model returning its logits tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def torchvision(name: str, **kwargs):
    return lambda: getattr(library("torchvision").models, name)(num_classes=10, **kwargs)


def timm(name: str, **kwargs):
    return lambda: library("timm").create_model(name, pretrained=False, num_classes=10, **kwargs)


def hugging_face(kind: str):
    def make() -> nn.Module:
        t = library("transformers")
        vit = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
                   patch_size=8, num_labels=10)
        model = {"vit": lambda: t.ViTForImageClassification(t.ViTConfig(**vit)),
                 "deit": lambda: t.DeiTForImageClassification(t.DeiTConfig(**vit)),
                 "swin": lambda: t.SwinForImageClassification(t.SwinConfig(
                     image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4,
                     num_labels=10)),
                 "convnext": lambda: t.ConvNextForImageClassification(t.ConvNextConfig(
                     num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10))}[kind]()
        return Logits(model)
    return make


# name -> (factory, input size, the family that must recognise it)
MODELS = {
    "torchvision.resnet18": (torchvision("resnet18"), 64, "cnn"),
    "torchvision.mobilenet_v3_small": (torchvision("mobilenet_v3_small"), 64, "cnn"),
    "torchvision.efficientnet_b0": (torchvision("efficientnet_b0"), 64, "cnn"),
    "torchvision.regnet_y_400mf": (torchvision("regnet_y_400mf"), 64, "cnn"),
    "torchvision.convnext_tiny": (torchvision("convnext_tiny"), 64, "cnn"),
    "torchvision.densenet121": (torchvision("densenet121"), 64, "cnn"),
    "torchvision.googlenet": (torchvision("googlenet", aux_logits=False, init_weights=True), 64, "cnn"),
    "torchvision.swin_t": (torchvision("swin_t"), 64, "transformer"),
    "torchvision.vit_b_16": (torchvision("vit_b_16"), 224, "transformer"),
    "timm.deit_tiny_patch16_224": (timm("deit_tiny_patch16_224"), 224, "transformer"),
    "timm.deit3_small_patch16_224": (timm("deit3_small_patch16_224"), 224, "transformer"),
    "timm.swin_tiny_patch4_window7_224": (timm("swin_tiny_patch4_window7_224"), 224, "transformer"),
    "timm.convnext_atto": (timm("convnext_atto"), 64, "cnn"),
    "timm.cait_xxs24_224": (timm("cait_xxs24_224"), 224, "transformer"),
    "timm.coat_lite_tiny": (timm("coat_lite_tiny"), 224, "cnn"),
    "timm.fastvit_t8": (timm("fastvit_t8"), 256, "cnn"),
    "timm.convformer_s18": (timm("convformer_s18"), 64, "cnn"),
    "timm.nf_resnet26": (timm("nf_resnet26"), 64, "cnn"),
    "timm.tiny_vit_5m_224": (timm("tiny_vit_5m_224"), 224, "transformer"),
    "transformers.vit": (hugging_face("vit"), 32, "transformer"),
    "transformers.deit": (hugging_face("deit"), 32, "transformer"),
    "transformers.swin": (hugging_face("swin"), 32, "transformer"),
    "transformers.convnext": (hugging_face("convnext"), 32, "cnn"),
}


# models whose forward pass reads a width from its input (CoaT's factorised attention reshapes by the width it
# is given), so that `build_spec`'s slimmed copy fails and those widths are kept; in every other model a width
# kept that way would be a width `apply` cannot slim: a gap to fix, not to hide
READS_WIDTHS = {"timm.coat_lite_tiny"}
PROBE_PIN = "found by running a slimmed copy at build time"


def exact_backend() -> str:
    installed = mdp_opt.installed_backends()
    return next(b for b in ("milp", "cpsat", "dp") if b in installed)


@pytest.mark.parametrize("name", list(MODELS))
def test_real_model_round_trip(name):
    factory, size, family = MODELS[name]
    torch.manual_seed(0)
    model = factory().eval()
    with torch.no_grad():       # zero-initialised heads would give every Taylor score 0
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0, 0.02)
    x = torch.randn(1, 3, size, size)
    data = [(torch.randn(2, 3, size, size), torch.randint(0, 10, (2,)))]
    ignore = [b.attn for b in model.blocks_token_only] if name.startswith("timm.cait") else []   # class attention
    spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency="flops",
                              costs=("latency", "params"), step=32, mlp_step=64, head_dim_step=16, ignore=ignore)
    assert spec.meta["family"] == family
    probed = sorted(d for d, why in spec.meta["pinned"].items() if PROBE_PIN in why)
    assert bool(probed) == (name in READS_WIDTHS), probed
    assert spec.full_costs()["params"] == sum(p.numel() for p in model.parameters())
    assert sum(len(d.choices) > 1 for d in spec.dims) > 0
    result = mdp_opt.solve(spec, {"latency": "50%"}, backend=exact_backend(), time_limit=120)
    assert result.has_solution
    small = handle.apply(result)
    with torch.no_grad():
        reference = model(x)
        assert small(x).shape == reference.shape
    assert sum(p.numel() for p in small.parameters()) == result.costs["params"]
    choice, active = spec.full_configuration()
    full = handle.apply(verify(spec, {}, Answer(Status.FEASIBLE, choice, active), "full", 0.0))
    with torch.no_grad():
        assert float((full(x) - reference).abs().max()) <= 1e-5 * max(1.0, float(reference.abs().max()))
