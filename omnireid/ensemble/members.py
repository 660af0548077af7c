"""Ensemble members from ``--models`` specs: a config with weights, or an exported artifact.

Spec forms (one per model)::

    configs/a.yml:logs/a/model_final.pth   # config + checkpoint
    configs/a.yml                          # config whose MODEL.WEIGHTS names the checkpoint
    logs/a/model_final.pth                 # checkpoint with config.yaml next to it (a training folder)
    deploy/a.onnx                          # an exported artifact (.onnx, .ts, .xml, ...): its input size
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from omnireid.config import CfgNode, setup_cfg
from omnireid.utils.errors import ConfigError, MissingFileError

CONFIG_SUFFIXES = (".yaml", ".yml")
CHECKPOINT_SUFFIXES = (".pth", ".pt")

# (batch dict on the device, flip TTA) -> (N, D) float32 features on CPU
ExtractFn = Callable[[dict, bool], torch.Tensor]


@dataclass
class ModelSpec:
    """A parsed ``--models`` entry: a config (+ weights), or an artifact."""

    text: str
    config: str | None = None
    weights: str | None = None
    artifact: str | None = None


@dataclass
class Member:
    """One loaded model: its name, the config its test loader is built from, its feature function."""

    name: str
    input_cfg: CfgNode
    extract: ExtractFn


def parse_model_spec(text: str) -> ModelSpec:
    """``CONFIG:WEIGHTS``, ``CONFIG``, ``CHECKPOINT`` (config.yaml beside it) or ``ARTIFACT``; files checked."""
    where = f"--models {text!r}"
    if not text.strip():
        raise ConfigError("--models: empty model spec")
    config = weights = None
    for suffix in CONFIG_SUFFIXES:
        cut = text.find(suffix + ":")
        if cut > 0:
            config, weights = text[: cut + len(suffix)], text[cut + len(suffix) + 1 :]
            if not weights:
                raise ConfigError(f"{where}: nothing after ':'; expected CONFIG.yaml:WEIGHTS.pth")
            break
    if config is None:
        lower = text.lower()
        if ":" in text and not os.path.exists(text):
            raise ConfigError(f"{where}: the part before ':' must be a config file (.yaml/.yml); "
                              "expected CONFIG.yaml:WEIGHTS.pth or an exported artifact")
        if lower.endswith(CONFIG_SUFFIXES):
            config = text
        elif lower.endswith(CHECKPOINT_SUFFIXES):
            config, weights = os.path.join(os.path.dirname(os.path.abspath(text)), "config.yaml"), text
            if not os.path.isfile(config):
                raise ConfigError(f"{where}: a checkpoint alone needs config.yaml next to it; "
                                  "give CONFIG.yaml:WEIGHTS.pth")
        else:
            _require(text, where)
            return ModelSpec(text, artifact=text)
    _require(config, where)
    if weights is not None:
        _require(weights, where)
    return ModelSpec(text, config=config, weights=weights)


def _require(path: str, where: str) -> None:
    if not os.path.isfile(path):
        raise MissingFileError(f"{where}: file not found: {path}")


def _unique_names(specs: Sequence[ModelSpec]) -> list[str]:
    stems = []
    for spec in specs:
        path = spec.artifact or spec.weights or spec.config or spec.text
        stem = os.path.splitext(os.path.basename(path))[0]
        if spec.weights and stem in ("model_final", "model_best"):  # name a training run by its folder
            stem = os.path.basename(os.path.dirname(os.path.abspath(path))) or stem
        stems.append(stem)
    return [stem if stems.count(stem) == 1 else f"{stem}#{i + 1}" for i, stem in enumerate(stems)]


def _config_member(name: str, spec: ModelSpec, opts: Sequence[str], device: torch.device) -> Member:
    from omnireid.engine.inference import extract_features
    from omnireid.inference.predictor import build_model_from_config

    model, cfg = build_model_from_config(spec.config, opts, weights=spec.weights, device=str(device))
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError(f"--models {spec.text!r}: no weights (give CONFIG:WEIGHTS or set MODEL.WEIGHTS in the "
                          "config); an ensemble of untrained models means nothing")

    def extract(batch: dict, flip: bool) -> torch.Tensor:
        with torch.inference_mode():
            return extract_features(model, batch, flip=flip)["features"].float().cpu()

    return Member(name, cfg, extract)


def _artifact_member(name: str, spec: ModelSpec, main_cfg: CfgNode) -> Member:
    from omnireid.inference import Predictor

    predictor = Predictor.from_artifact(spec.artifact)
    cfg = main_cfg.clone()
    cfg.defrost()
    if predictor.input_size is not None:
        cfg.INPUT.SIZE_TEST = list(predictor.input_size)
        cfg.INPUT.CROP.ENABLED = False

    def extract(batch: dict, flip: bool) -> torch.Tensor:
        images = batch["images"].cpu()
        feats = torch.from_numpy(predictor(images))
        if flip:
            feats = (feats + torch.from_numpy(predictor(torch.flip(images, dims=[3])))) / 2
        return feats

    return Member(name, cfg, extract)


def load_members(models: Sequence[str], main_cfg: CfgNode, opts: Sequence[str] = ()) -> list[Member]:
    """Every ``--models`` entry loaded (specs are all checked before any model is built)."""
    from omnireid.utils.comm import resolve_device

    if not models:
        raise ConfigError("--models: give at least one model (CONFIG.yaml:WEIGHTS.pth or an exported artifact)")
    specs = [parse_model_spec(text) for text in models]
    device = resolve_device(main_cfg.MODEL.DEVICE)
    members = []
    for name, spec in zip(_unique_names(specs), specs):
        if spec.artifact is not None:
            members.append(_artifact_member(name, spec, main_cfg))
        else:
            members.append(_config_member(name, spec, opts, device))
    return members


def main_config(models: Sequence[str], config_file: str | None, opts: Sequence[str]) -> CfgNode:
    """The config of the evaluation (datasets, TEST.*): ``--config-file``, else the first config model's."""
    if not config_file:
        for text in models:
            spec = parse_model_spec(text)
            if spec.config is not None:
                config_file = spec.config
                break
    if not config_file:
        raise ConfigError("only exported artifacts in --models: give --config-file for the datasets and TEST settings")
    return setup_cfg(config_file, list(opts))
