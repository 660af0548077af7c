"""Load FastReID checkpoints into omnireid models, and convert them (config + weights) in one step.

A FastReID checkpoint is ``{"model": state_dict, "optimizer": ..., "scheduler": ..., "iteration"
or "epoch": ...}``. Only ``model`` is used. Parameter names mostly match ours; the differences are
renames listed in :data:`STATE_DICT_RULES`, plus two buffers older versions saved and we keep out of
checkpoints (``pixel_mean``/``pixel_std``: they become ``MODEL.PIXEL_MEAN/STD``).

Every load is ``torch.load(weights_only=True)``. Checkpoints that pickled NumPy scalars (e.g. a best
metric) load only with ``allow_numpy_scalars=True``, which still uses the restricted unpickler and
allows exactly the NumPy globals in :func:`numpy_scalar_globals`; any other global is an error.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from omnireid.config import CfgNode
from omnireid.utils.errors import CheckpointError
from omnireid.utils.file_io import atomic_torch_save, atomic_write_text, load_checkpoint_file

from omnireid.config.fastreid import translate_fastreid_config

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "model_final.pth"
REPORT_NAME = "conversion_report.txt"
PIXEL_STAT_KEYS = {"pixel_mean": "MODEL.PIXEL_MEAN", "pixel_std": "MODEL.PIXEL_STD"}

_HEAD = r"(?P<head>(?:^|.*\.)(?:heads|b\d+_head))"


@dataclass(frozen=True)
class KeyRename:
    """FastReID parameter names matching ``pattern`` are renamed with ``replacement`` (``re.sub``)."""

    pattern: str
    replacement: str
    why: str


STATE_DICT_RULES: tuple[KeyRename, ...] = (
    KeyRename(r"^module\.", "", "DataParallel/DistributedDataParallel prefix"),
    KeyRename(_HEAD + r"\.bnneck\.", r"\g<head>.bottleneck.0.", "pre-V1.0 BNneckHead BNNeck"),
    KeyRename(_HEAD + r"\.weight$", r"\g<head>.classifier.weight", "FastReID 1.x EmbeddingHead class weights"),
)


def numpy_scalar_globals() -> list[Any]:
    """The NumPy globals a pickled NumPy scalar needs (scalar reconstructor, dtype classes)."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # NumPy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    allowed: list[Any] = [scalar, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType",
                                                      "Int32DType", "BoolDType") if hasattr(dtypes, name)]
    return allowed


def _global_name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def load_fastreid_checkpoint(path: str, allow_numpy_scalars: bool = False) -> dict[str, Any]:
    """The checkpoint dict, loaded with ``weights_only=True`` (see the module docstring)."""
    try:
        return load_checkpoint_file(path)
    except RuntimeError as exc:
        if not os.path.isfile(path):
            raise
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # not a zip checkpoint (legacy format): nothing more precise to say
            raise exc from None
        if not unsafe:
            raise
        allowed = numpy_scalar_globals()
        allowed_names = {_global_name(g) for g in allowed}
        # NumPy 2 pickles name numpy.core.* as numpy._core.* and vice versa; compare without the underscore.
        normalise = lambda name: name.replace("numpy._core.", "numpy.core.")  # noqa: E731
        others = sorted(g for g in unsafe if normalise(g) not in {normalise(n) for n in allowed_names})
        if others:
            raise CheckpointError(f"{path} pickles objects other than tensors and NumPy scalars ({', '.join(others)}); "
                                  "it cannot be loaded safely. In the environment that wrote it, re-save only the "
                                  "weights: torch.save({'model': ckpt['model']}, 'weights.pth')") from None
        if not allow_numpy_scalars:
            raise CheckpointError(f"{path} pickles NumPy scalars ({', '.join(sorted(unsafe))}), which weights_only=True "
                                  "refuses by default. Pass --allow-numpy-scalars (allow_numpy_scalars=True) to allow "
                                  "exactly these NumPy globals in the restricted unpickler") from None
    with torch.serialization.safe_globals(numpy_scalar_globals()):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def fastreid_model_state(checkpoint: Mapping[str, Any], source: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The ``model`` state dict of a FastReID checkpoint (or the checkpoint itself if it is one)."""
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{source}: no 'model' state dict in the checkpoint (keys: {sorted(checkpoint)[:10]})")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: 'model' holds non-tensor entries: {bad[:5]}")
    return dict(state)


@dataclass
class MappedState:
    """Our state dict, the renames applied (``{rule: [(old, new), ...]}``) and the FastReID pixel statistics."""

    state: dict[str, torch.Tensor]
    renames: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    pixel_stats: dict[str, list[float]] = field(default_factory=dict)


def rename_fastreid_keys(state: Mapping[str, torch.Tensor]) -> MappedState:
    """Apply :data:`STATE_DICT_RULES`; take the pixel statistics out of the state dict."""
    result = MappedState(state={})
    for key, tensor in state.items():
        if key in PIXEL_STAT_KEYS:
            result.pixel_stats[PIXEL_STAT_KEYS[key]] = [float(v) for v in tensor.flatten()]
            continue
        new_key = key
        for rule in STATE_DICT_RULES:
            renamed = re.sub(rule.pattern, rule.replacement, new_key)
            if renamed != new_key:
                result.renames.setdefault(rule.why, []).append((new_key, renamed))
                new_key = renamed
        if new_key in result.state:
            raise CheckpointError(f"two FastReID parameters map to {new_key!r} (the second is {key!r})")
        result.state[new_key] = tensor
    return result


def classifier_classes(state: Mapping[str, torch.Tensor]) -> int | None:
    """Number of classes of the (first) classifier in our key names, ``None`` without one."""
    for key, tensor in state.items():
        if key.endswith("classifier.weight") and tensor.dim() == 2:
            return int(tensor.shape[0])
    return None


@dataclass
class Conversion:
    """What :func:`convert_fastreid` wrote and why."""

    cfg: CfgNode
    config_path: str
    weights_path: str
    report_path: str
    notes: list[str]


def convert_fastreid(config_file: str, weights: str | None, output_dir: str, *, generation: str | None = None,
                     schedule_unit: str | None = None, iters_per_epoch: int | None = None,
                     allow_numpy_scalars: bool = False, opts: list[str] | None = None) -> Conversion:
    """Translate a FastReID config (and checkpoint) into ``output_dir``.

    Writes ``config.yaml`` (omnireid keys; ``MODEL.WEIGHTS`` names the converted file),
    ``model_final.pth`` (``{"model": state_dict}`` in our key names, written atomically) when
    ``weights`` is given, and ``conversion_report.txt`` (every translation and rename).
    The converted weights are loaded into the model built from the translated config with every
    key and shape checked, so a wrong config fails here rather than giving different features.
    """
    from omnireid.modeling import build_model
    from omnireid.modeling.weights import load_weights

    translated = translate_fastreid_config(config_file, generation=generation, schedule_unit=schedule_unit,
                                           iters_per_epoch=iters_per_epoch, opts=opts)
    cfg = translated.cfg
    notes = list(translated.notes)
    os.makedirs(output_dir, exist_ok=True)
    config_path = os.path.join(output_dir, CONFIG_NAME)
    weights_path = os.path.join(output_dir, WEIGHTS_NAME)
    report_path = os.path.join(output_dir, REPORT_NAME)
    rename_lines: list[str] = []
    if weights:
        mapped = rename_fastreid_keys(fastreid_model_state(load_fastreid_checkpoint(weights, allow_numpy_scalars),
                                                           weights))
        for key, values in mapped.pixel_stats.items():
            leaf = key.rsplit(".", 1)[1]
            current = [float(v) for v in cfg.MODEL[leaf]]
            if len(values) != len(current) or any(abs(a - b) > 1e-6 for a, b in zip(values, current)):
                cfg.MODEL[leaf] = values
                notes.append(f"set {key}={values} from the checkpoint's {leaf.lower()} buffer (config said {current})")
        num_classes = classifier_classes(mapped.state)
        if num_classes is not None and num_classes != cfg.MODEL.HEADS.NUM_CLASSES:
            notes.append(f"set MODEL.HEADS.NUM_CLASSES={num_classes} from the checkpoint's classifier "
                         f"(config said {cfg.MODEL.HEADS.NUM_CLASSES})")
            cfg.MODEL.HEADS.NUM_CLASSES = num_classes
        if cfg.MODEL.BACKBONE.PRETRAIN:
            cfg.MODEL.BACKBONE.PRETRAIN = False
            notes.append("set MODEL.BACKBONE.PRETRAIN=False: every weight comes from the converted checkpoint")
        build_cfg = cfg.clone()
        build_cfg.MODEL.DEVICE = "cpu"
        model = build_model(build_cfg)
        loaded = load_weights(model, mapped.state, strict=True, source_name=weights,
                              hint="wrong config for these weights? compare MODEL.BACKBONE.* / MODEL.HEADS.* with "
                                   "the FastReID config the model was trained with")
        if loaded.benign_missing:
            notes.append(f"{len(loaded.benign_missing)} num_batches_tracked counters absent from {weights}: "
                         "kept the model's")
        state = model.state_dict()
        atomic_torch_save({"model": state}, weights_path)
        cfg.MODEL.WEIGHTS = os.path.abspath(weights_path)
        notes.append(f"wrote {len(state)} tensors to {weights_path}")
        for why, pairs in mapped.renames.items():
            rename_lines.append(f"{why}: {len(pairs)} key(s)")
            rename_lines.extend(f"  {old} -> {new}" for old, new in pairs)
        if not mapped.renames:
            rename_lines.append("(no renames: every FastReID parameter name is ours)")
    atomic_write_text(config_path, cfg.dump())
    report = ["# omnireid convert-fastreid", f"config: {config_file}", f"weights: {weights or '(none)'}", "",
              "## config translations", *(f"- {n}" for n in notes), "", "## checkpoint key renames",
              *(rename_lines or ["(no checkpoint given)"]), ""]
    atomic_write_text(report_path, "\n".join(report))
    return Conversion(cfg=cfg, config_path=config_path, weights_path=weights_path if weights else "",
                      report_path=report_path, notes=notes)
