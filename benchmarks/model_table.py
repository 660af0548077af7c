"""Measure parameters and FLOPs of every backbone variant at 256x128 and write docs/model_zoo.md.

Models are built and run on the ``meta`` device: shapes propagate and
``torch.utils.flop_counter.FlopCounterMode`` counts every convolution / matmul without computing
anything, so even the largest variants take a fraction of a second. Numbers are for the reID
configuration (``LAST_STRIDE 1`` where the family supports it) and the backbone only (no head).

    python benchmarks/model_table.py [--output docs/model_zoo.md] [--height 256 --width 128]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode

from omnireid.config.defaults import get_cfg
from omnireid.modeling.backbones import BACKBONE_REGISTRY
from omnireid.modeling.backbones.efficientnet import EFFICIENTNET_SCALING
from omnireid.modeling.backbones.osnet import OSNET_CHANNELS
from omnireid.modeling.backbones.regnet import REGNET_PARAMS
from omnireid.modeling.backbones.repvgg import REPVGG_SPECS
from omnireid.modeling.backbones.resnest import RESNEST_SPECS
from omnireid.modeling.backbones.shufflenet import SHUFFLENET_CHANNELS
from omnireid.utils.file_io import atomic_write_text


@dataclass(frozen=True)
class Variant:
    family: str
    label: str
    name: str  # registered backbone name
    overrides: dict = field(default_factory=dict)


def variants() -> list[Variant]:
    out = [Variant("ResNet", f"R{d[:-1]}", "build_resnet_backbone", {"DEPTH": d})
           for d in ("18x", "34x", "50x", "101x", "152x")]
    out += [Variant("ResNet", "R50-ibn", "build_resnet_backbone", {"DEPTH": "50x", "WITH_IBN": True}),
            Variant("ResNet", "R101-ibn", "build_resnet_backbone", {"DEPTH": "101x", "WITH_IBN": True}),
            Variant("ResNet", "R50-NL (AGW)", "build_resnet_backbone", {"DEPTH": "50x", "WITH_NL": True})]
    out += [Variant("ResNeSt", f"S{d[:-1]}", "build_resnest_backbone", {"DEPTH": d}) for d in RESNEST_SPECS]
    out += [Variant("ResNeXt", f"X{d[:-1]} 32x4d", "build_resnext_backbone", {"DEPTH": d}) for d in ("50x", "101x")]
    out += [Variant("ResNeXt", "X101 32x4d-ibn", "build_resnext_backbone", {"DEPTH": "101x", "WITH_IBN": True}),
            Variant("ResNeXt", "X50 32x4d-NL", "build_resnext_backbone", {"DEPTH": "50x", "WITH_NL": True})]
    out += [Variant("OSNet", f"osnet_{d}", "build_osnet_backbone", {"DEPTH": d}) for d in OSNET_CHANNELS]
    out += [Variant("OSNet", "osnet_ibn_x1_0", "build_osnet_backbone", {"DEPTH": "x1_0", "WITH_IBN": True})]
    for kind, title in (("x", "RegNetX"), ("y", "RegNetY")):
        for variant in REGNET_PARAMS:
            if variant.endswith(kind):
                mf = int(variant[:-1])
                size = f"{mf}MF" if mf < 1000 else f"{mf / 1000:g}GF"
                out.append(Variant(title, f"{title}-{size}", "build_regnet_backbone", {"DEPTH": variant}))
    out += [Variant("EfficientNet", f"EfficientNet-{b}", "build_effnet_backbone", {"DEPTH": b})
            for b in EFFICIENTNET_SCALING]
    out += [Variant("MobileNetV2", f"MobileNetV2 {w}x", "build_mobilenetv2_backbone", {"WIDTH_MULT": w})
            for w in (1.4, 1.0, 0.75, 0.5, 0.35)]
    out += [Variant("MobileNetV3", f"MobileNetV3-{s}", "build_mobilenetv3_backbone", {"DEPTH": s})
            for s in ("large", "small")]
    out += [Variant("ShuffleNetV2", f"ShuffleNetV2 {s}", "build_shufflenetv2_backbone", {"DEPTH": s})
            for s in SHUFFLENET_CHANNELS]
    for v in REPVGG_SPECS:
        out.append(Variant("RepVGG", f"RepVGG-{v} (train form)", "build_repvgg_backbone", {"DEPTH": v}))
        out.append(Variant("RepVGG", f"RepVGG-{v} (deployed)", "build_repvgg_backbone", {"DEPTH": v, "DEPLOY": True}))
    out += [Variant("ViT", f"ViT-{s} stride 16", "build_vit_backbone", {"DEPTH": s, "STRIDE_SIZE": [16, 16]})
            for s in ("small", "base")]
    out += [Variant("ViT", "ViT-base stride 12 (overlapping)", "build_vit_backbone",
                    {"DEPTH": "base", "STRIDE_SIZE": [12, 12]})]
    return out


def measure(variant: Variant, height: int, width: int) -> tuple[int, int, int, tuple[int, ...]]:
    """(parameters, FLOPs, output channels, output shape) of one variant, on the meta device."""
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = variant.name
    cfg.INPUT.SIZE_TRAIN = [height, width]
    for key, value in variant.overrides.items():
        cfg.MODEL.BACKBONE[key] = value
    with torch.device("meta"):
        model = BACKBONE_REGISTRY.get(variant.name)(cfg).eval()
        params = sum(p.numel() for p in model.parameters())
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            out = model(torch.empty(1, 3, height, width))
    return params, counter.get_total_flops(), model.out_channels, tuple(out.shape[1:])


def render(rows: list[tuple[Variant, int, int, int, tuple[int, ...]]], height: int, width: int) -> str:
    lines = [
        "# Model zoo: backbones",
        "",
        f"Parameters and FLOPs of every registered backbone variant for one {height}x{width} image, measured by",
        "`benchmarks/model_table.py` (`torch.utils.flop_counter.FlopCounterMode` on the meta device; regenerate with",
        "`python benchmarks/model_table.py`). Backbone only (no head), reID configuration: `LAST_STRIDE 1` where the",
        "family supports it (ResNet/ResNeSt/ResNeXt/RegNet/EfficientNet/RepVGG); the last column gives each map.",
        "GFLOPs counts a multiply-add as 2 FLOPs; GMACs (multiply-adds, the unit most papers call \"FLOPs\") is half.",
        "",
        "Config: `MODEL.BACKBONE.NAME <name>` plus the listed keys. Any timm model is also available as",
        "`MODEL.BACKBONE.NAME timm` + `MODEL.BACKBONE.VARIANT <timm model name>` (not listed).",
        "",
        "| family | variant | `NAME` | keys | params (M) | GFLOPs | GMACs | out channels | output (C, h, w) |",
        "|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for variant, params, flops, channels, shape in rows:
        keys = ", ".join(f"{k}={v}" for k, v in variant.overrides.items())
        lines.append(f"| {variant.family} | {variant.label} | `{variant.name}` | {keys} | {params / 1e6:.2f} | "
                     f"{flops / 1e9:.2f} | {flops / 2e9:.2f} | {channels} | {shape} |")
    lines += ["", f"Measured with torch {torch.__version__}.", "", *NOTES]
    return "\n".join(lines)


NOTES = [
    "## Pretrained weights",
    "",
    "Nothing is downloaded at run time. `omnireid/modeling/pretrained_manifest.yaml` lists, per backbone variant,",
    "the weight file, its sha256 (full, or the prefix the publisher puts in the file name), the source URL, and the",
    "input size and mean/std it was trained with. With `MODEL.BACKBONE.PRETRAIN True` and an empty `PRETRAIN_PATH`",
    "the file is looked up in `$OMNIREID_WEIGHTS` (default `~/.cache/omnireid/weights`); a missing or mismatching",
    "file is an error naming the file, the folder and the URL. `PRETRAIN_PATH` may point to any local state dict.",
    "Classifier tensors (`fc.`, `classifier.`, `head.`) are ignored; other mismatches are logged.",
    "",
    "## Camera-aware backbones",
    "",
    "A backbone whose class sets `accepts_camids = True` (the ViT with side-information embedding,",
    "`SIE_COE` x a learned vector per camera, `MODEL.HEADS.NUM_CAMERAS` cameras) is called as",
    "`backbone(images, camids=camids)` by the meta-architecture whenever the batch has `camids`; a bare image tensor",
    "(e.g. an exported graph) runs without the camera term.",
    "",
    "## FastReID layouts",
    "",
    "ResNeSt, OSNet (+IBN), RepVGG, ViT and plain ResNeXt use FastReID's parameter names and give FastReID's",
    "features for the same weights (checked against the `fastreid` package in `tests/test_backbones.py`).",
    "ResNeXt-IBN puts IBN-a in stages 1-3 as the IBN-Net paper and its released weights (FastReID also in stage 4),",
    "and non-local blocks use omnireid's `NonLocal` (FastReID's has a one-channel bottleneck). MobileNet,",
    "ShuffleNet, EfficientNet and RegNet are built on torchvision's modules with torchvision's names, so its",
    "ImageNet weights load as is (except RegNetX-400MF / RegNetY-800MF, whose torchvision widths are rounded",
    "differently from the pycls originals that FastReID and omnireid follow). RegNet also renames pycls-layout",
    "tensors on loading, so FastReID RegNet backbones load and give FastReID's features (tested).",
    "",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "..", "docs", "model_zoo.md"))
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args(argv)
    rows = []
    start = time.perf_counter()
    for variant in variants():
        params, flops, channels, shape = measure(variant, args.height, args.width)
        rows.append((variant, params, flops, channels, shape))
        print(f"{variant.label:40s} {params / 1e6:8.2f} M  {flops / 1e9:8.2f} GFLOPs", file=sys.stderr)
    text = render(rows, args.height, args.width)
    atomic_write_text(os.path.abspath(args.output), text)
    print(text)
    elapsed = time.perf_counter() - start
    print(f"{len(rows)} variants in {elapsed:.1f} s -> {os.path.abspath(args.output)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
