"""Models for the export tests: FastReID-style configs at a tiny input size, with random weights and
randomised BatchNorm statistics (so BN folding is really exercised), in eval mode."""
from __future__ import annotations

import os

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUT_SIZE = (64, 32)

RECIPES = {
    # BoT (bag of tricks) ResNet-50-IBN: GAP, BNNeck, test feature before the neck
    "bot_r50_ibn": ("Base-bagtricks.yml", ["MODEL.BACKBONE.WITH_IBN", "True"]),
    # SBS ResNet-50-IBN: non-local blocks, GeM-P pooling, circle softmax, feature after the neck
    "sbs_r50_ibn": ("Base-SBS.yml", ["MODEL.BACKBONE.WITH_IBN", "True"]),
    # SBS without non-local blocks (Caffe has no batched matrix product for them)
    "sbs_r50_ibn_no_nl": ("Base-SBS.yml", ["MODEL.BACKBONE.WITH_IBN", "True", "MODEL.BACKBONE.WITH_NL", "False"]),
    "bot_r18": ("Base-bagtricks.yml", ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512"]),
}


def recipe_opts(name: str, *extra: str) -> tuple[str, list[str]]:
    base, opts = RECIPES[name]
    common = ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "8",
              "INPUT.SIZE_TEST", str(list(INPUT_SIZE)), "INPUT.SIZE_TRAIN", str(list(INPUT_SIZE)),
              "DATASETS.ROOT", os.path.join(REPO, ".no-datasets-here"), "MODEL.DEVICE", "cpu"]
    return os.path.join(REPO, "configs", base), common + opts + list(extra)


def make_cfg(name: str, *extra: str):
    from omnireid.config import get_cfg

    config_file, opts = recipe_opts(name, *extra)
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    return cfg


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial running statistics and affine parameters in every BatchNorm (not in place of the
    caller's expectations: the model is modified and returned)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.rand(shape, generator=generator) * 0.2 - 0.1)
                module.running_var.copy_(torch.rand(shape, generator=generator) * 0.5 + 0.75)
                if module.weight is not None:
                    module.weight.copy_(torch.rand(shape, generator=generator) * 0.5 + 0.75)
                if module.bias is not None and module.bias.requires_grad:
                    module.bias.copy_(torch.rand(shape, generator=generator) * 0.2 - 0.1)
    return model


def build_eval_model(name: str, *extra: str, seed: int = 0) -> tuple[torch.nn.Module, object]:
    from omnireid.modeling import build_model

    torch.manual_seed(seed)
    cfg = make_cfg(name, *extra)
    model = randomise_batchnorm(build_model(cfg), seed).eval()
    return model, cfg


def parity_batch(cfg, count: int = 8) -> tuple[torch.Tensor, str]:
    from omnireid.export.parity import dataset_images

    return dataset_images(cfg, count)
