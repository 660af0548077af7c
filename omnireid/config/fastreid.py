"""Read FastReID config files: current (1.x) keys, V1.0 keys and the pre-V1.0 (``MAX_ITER``) ones.

FastReID renamed many keys over its history and changed some defaults. A FastReID file only states
what differs from *its* defaults, so a faithful translation needs three steps:

1. detect the FastReID generation the file was written for (``1.x``, ``1.0`` or ``0.x``) from the
   keys it uses (or take it from the caller);
2. start from our defaults overlaid with the FastReID defaults of that generation that differ from
   ours (:data:`FASTREID_DEFAULTS`);
3. translate every key of the file (:data:`KEY_RULES`) and every legacy value spelling
   (:data:`VALUE_RULES`), with one note per translation.

A key with no meaning here is an error saying why, unless it is harmless (logging periods, disabled
features), in which case it is dropped with a note (:data:`IGNORED_KEYS`). Nothing is dropped silently.

Importing this module also registers a :func:`~omnireid.config.register_key_translator` hook, so
the one-to-one V1.0 renames (``INPUT.DO_FLIP`` ...) are understood by every config load; keys whose
meaning depends on other keys or on the FastReID generation (``DATALOADER.PK_SAMPLER``,
``SOLVER.MAX_ITER`` in epochs, ``INPUT.PADDING: 10``) need the whole file: :func:`translate_fastreid_config`
(``omnireid convert-fastreid``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Hashable, Mapping

from .config import CfgNode, ConfigError, coerce, load_yaml_with_base, parse_value, register_key_translator
from .defaults import get_cfg

logger = logging.getLogger(__name__)

GENERATIONS = ("1.x", "1.0", "0.x")
SCHEDULE_UNITS = ("epochs", "iterations")


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class KeyRule:
    """A FastReID key that is spelled differently here: ``legacy`` -> ``target`` (full key paths)."""

    legacy: str
    target: str
    convert: Callable[[Any], Any] = _identity
    why: str = "FastReID V1.0 key"


def _reject_non_mapping_padding(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"INPUT.PADDING (FastReID V1.0 padding size) must be an int, got {value!r}")
    return value


def _rm_lt_to_min_images(value: Any) -> int:
    if not isinstance(value, bool):
        raise ConfigError(f"DATASETS.RM_LT (FastReID NAIC20 long-tail removal) must be True or False, got {value!r}")
    return 2 if value else 0


# One-to-one renames. Keys whose meaning needs other keys are handled in ``_translate_entries``.
KEY_RULES: tuple[KeyRule, ...] = (
    KeyRule("INPUT.DO_FLIP", "INPUT.FLIP.ENABLED"),
    KeyRule("DATASETS.RM_LT", "DATASETS.MIN_IMAGES_PER_ID", _rm_lt_to_min_images,
            "FastReID NAIC20 key (drop identities of a single image)"),
    KeyRule("INPUT.FLIP_PROB", "INPUT.FLIP.PROB"),
    KeyRule("INPUT.DO_PAD", "INPUT.PADDING.ENABLED"),
    KeyRule("INPUT.PADDING_MODE", "INPUT.PADDING.MODE"),
    KeyRule("INPUT.PADDING", "INPUT.PADDING.SIZE", _reject_non_mapping_padding, "FastReID V1.0 key (a size)"),
    KeyRule("INPUT.DO_AUTOAUG", "INPUT.AUTOAUG.ENABLED"),
    KeyRule("INPUT.AUTOAUG_PROB", "INPUT.AUTOAUG.PROB"),
    KeyRule("INPUT.DO_AUGMIX", "INPUT.AUGMIX.ENABLED"),
    KeyRule("INPUT.AUGMIX_PROB", "INPUT.AUGMIX.PROB"),
    KeyRule("INPUT.REA.MEAN", "INPUT.REA.VALUE", why="FastReID pre-V1.0 key (erasing fill value, 0-255)"),
    KeyRule("SOLVER.FP16_ENABLED", "SOLVER.AMP.ENABLED"),
    KeyRule("TEST.ROC_ENABLED", "TEST.ROC.ENABLED"),
    KeyRule("MODEL.LOSSES.CIRCLE.ALPHA", "MODEL.LOSSES.CIRCLE.GAMMA", why="FastReID pre-V1.0 key (circle loss scale)"),
)
_RULES_BY_KEY = MappingProxyType({rule.legacy: rule for rule in KEY_RULES})


def _depth_string(value: Any) -> Any:
    return f"{value}x" if isinstance(value, int) and not isinstance(value, bool) else value


def _drop_empty_names(value: Any) -> Any:
    return [v for v in value if v] if isinstance(value, (list, tuple)) else value


# Legacy value spellings of keys that exist here: key -> {old value: new value} or a function.
# Registry aliases (gempoolP, circleSoftmax, avgpool, linear, ...) are resolved by the registries
# themselves and are not repeated here.
VALUE_RULES: Mapping[str, Mapping[Any, Any] | Callable[[Any], Any]] = MappingProxyType({
    "MODEL.BACKBONE.DEPTH": _depth_string,  # pre-V1.0 configs write ``DEPTH: 50``
    # FastReID's default "cuda" means "the GPU"; "auto" uses it when there is one and the CPU otherwise.
    "MODEL.DEVICE": {"cuda": "auto"},
    "MODEL.FREEZE_LAYERS": _drop_empty_names,  # V1.0 default ``['']`` means "none"
    "MODEL.HEADS.CLS_LAYER": {"circle": "CircleSoftmax", "amSoftmax": "CosSoftmax"},
    "SOLVER.SCHED": {"WarmupMultiStepLR": "MultiStepLR", "DelayedCosineAnnealingLR": "CosineAnnealingLR"},
})

# pre-V1.0 head classes -> EmbeddingHead settings with the same computation.
LEGACY_HEADS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "BNneckHead": {"MODEL.HEADS.NAME": "EmbeddingHead", "MODEL.HEADS.WITH_BNNECK": True,
                   "MODEL.HEADS.EMBEDDING_DIM": 0},
    "LinearHead": {"MODEL.HEADS.NAME": "EmbeddingHead", "MODEL.HEADS.WITH_BNNECK": False,
                   "MODEL.HEADS.EMBEDDING_DIM": 0},
})


def _always(_value: Any) -> bool:
    return True


def _is_one(value: Any) -> bool:
    return value == 1


def _is_false(value: Any) -> bool:
    return value is False


@dataclass(frozen=True)
class IgnoredKey:
    """A FastReID key dropped with a note when ``harmless(value)``; otherwise an error saying ``why``."""

    why: str
    harmless: Callable[[Any], bool] = _always


IGNORED_KEYS: Mapping[str, IgnoredKey] = MappingProxyType({
    "SOLVER.LOG_PERIOD": IgnoredKey("console/metrics logging period; omnireid logs on its own schedule"),
    "SOLVER.WRITE_PERIOD": IgnoredKey("tensorboard writing period; omnireid writes every logged iteration"),
    "MODEL.BACKBONE.NORM_SPLIT": IgnoredKey("Ghost BatchNorm splits: omnireid has no Ghost BN, only 1 "
                                            "(plain BN) can be reproduced", _is_one),
    "MODEL.HEADS.NORM_SPLIT": IgnoredKey("Ghost BatchNorm splits: omnireid has no Ghost BN, only 1 "
                                         "(plain BN) can be reproduced", _is_one),
    "MODEL.HEADS.IN_FEAT": IgnoredKey("head input width; omnireid takes it from the backbone's out_channels"),
    "SOLVER.SWA.ENABLED": IgnoredKey("stochastic weight averaging is not implemented in omnireid", _is_false),
    "SOLVER.SWA.ITER": IgnoredKey("SWA option (SWA disabled)"),
    "SOLVER.SWA.PERIOD": IgnoredKey("SWA option (SWA disabled)"),
    "SOLVER.SWA.LR_FACTOR": IgnoredKey("SWA option (SWA disabled)"),
    "SOLVER.SWA.ETA_MIN_LR": IgnoredKey("SWA option (SWA disabled)"),
    "SOLVER.SWA.LR_SCHED": IgnoredKey("SWA option (SWA disabled)"),
    "DATALOADER.NAIVE_WAY": IgnoredKey("only meaningful with DATALOADER.PK_SAMPLER"),
    # FastReID 1.x writes it in every dump (default []); only its SetReWeightSampler reads it.
    "DATALOADER.SET_WEIGHT": IgnoredKey("per-dataset weights of FastReID's SetReWeightSampler, which omnireid "
                                        "does not have (naming that sampler is an error)"),
})

# Keys that cannot be translated, with the reason (and what to do instead).
REJECTED_KEYS: Mapping[str, str] = MappingProxyType({
    "MODEL.OPEN_LAYERS": "pre-V1.0 'train only these layers for FREEZE_ITERS'; omnireid freezes the complement: "
                         "list the frozen modules in MODEL.FREEZE_LAYERS instead",
    "MODEL.HEADS.REDUCTION_DIM": "pre-V1.0 ReductionHead (1x1 conv + BN + LeakyReLU) has no omnireid equivalent; "
                                 "EmbeddingHead with MODEL.HEADS.EMBEDDING_DIM has no LeakyReLU",
})

# FastReID defaults that differ from ours, per generation, in our key names. A FastReID file relies on
# these for every key it does not set. (1.x: fastreid 1.3/1.4 defaults.py; 1.0: the V1.0 release;
# 0.x: mid-2020, the MAX_ITER generation, whose defaults also moved between commits.)
# Every generation trains without AMP unless the file enables it (SOLVER.AMP.ENABLED / SOLVER.FP16_ENABLED).
_COMMON_1 = {"MODEL.LOSSES.TRI.HARD_MINING": False, "DATALOADER.SAMPLER_TRAIN": "TrainingSampler",
             "DATALOADER.NUM_WORKERS": 8, "SOLVER.BASE_LR": 3e-4, "SOLVER.STEPS": [30, 55],
             "SOLVER.WARMUP_ITERS": 1000, "TEST.IMS_PER_BATCH": 64, "SOLVER.AMP.ENABLED": False}
_LEGACY_COMMON = {"SOLVER.AMP.ENABLED": False, "MODEL.BACKBONE.PRETRAIN": True, "MODEL.HEADS.WITH_BNNECK": True, "MODEL.HEADS.MARGIN": 0.15,
                  "MODEL.HEADS.SCALE": 128.0, "MODEL.LOSSES.TRI.HARD_MINING": True,
                  "INPUT.FLIP.ENABLED": True, "INPUT.PADDING.ENABLED": True,
                  "DATALOADER.SAMPLER_TRAIN": "BalancedIdentitySampler", "DATALOADER.NUM_WORKERS": 8,
                  "SOLVER.BASE_LR": 3e-4, "SOLVER.WEIGHT_DECAY_BIAS": 0.0, "SOLVER.STEPS": [30, 55],
                  "SOLVER.WARMUP_ITERS": 10, "TEST.IMS_PER_BATCH": 64}
FASTREID_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "1.x": MappingProxyType(_COMMON_1),
    "1.0": MappingProxyType({**_LEGACY_COMMON, "SOLVER.CHECKPOINT_PERIOD": 20, "TEST.EVAL_PERIOD": 20}),
    # (pre-V1.0 schedule defaults changed units between commits: not carried over, see _LEGACY_SCHEDULE)
    "0.x": MappingProxyType({**{k: v for k, v in _LEGACY_COMMON.items()
                                if k not in ("SOLVER.STEPS", "SOLVER.WARMUP_ITERS")}, "INPUT.CJ.PROB": 0.8,
                             "INPUT.REA.VALUE": [0.596 * 255, 0.558 * 255, 0.497 * 255],
                             "SOLVER.ETA_MIN_LR": 3e-7}),
})

# Keys only a given generation uses (the first match, oldest generation first, decides).
_GENERATION_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("0.x", ("SOLVER.MAX_ITER", "SOLVER.DELAY_ITERS", "SOLVER.WARMUP_EPOCHS", "SOLVER.SWA", "MODEL.HEADS.IN_FEAT",
             "MODEL.HEADS.REDUCTION_DIM", "MODEL.HEADS.NORM_SPLIT", "MODEL.BACKBONE.NORM_SPLIT",
             "MODEL.OPEN_LAYERS", "MODEL.LOSSES.CIRCLE.ALPHA", "INPUT.REA.MEAN")),
    ("1.0", ("INPUT.DO_FLIP", "INPUT.FLIP_PROB", "INPUT.DO_PAD", "INPUT.PADDING_MODE", "INPUT.DO_AUTOAUG",
             "INPUT.AUTOAUG_PROB", "INPUT.DO_AUGMIX", "INPUT.AUGMIX_PROB", "DATALOADER.PK_SAMPLER",
             "DATALOADER.NAIVE_WAY", "SOLVER.FP16_ENABLED", "TEST.ROC_ENABLED")),
)

# pre-V1.0 schedule keys: (legacy key, our key, unit kind). "length" keys are epochs in our config,
# "iterations" keys are iterations in our config. Which unit the file used depends on the commit.
_LEGACY_SCHEDULE = (
    ("SOLVER.MAX_ITER", "SOLVER.MAX_EPOCH", "length"),
    ("SOLVER.DELAY_ITERS", "SOLVER.DELAY_EPOCHS", "length"),
    ("SOLVER.STEPS", "SOLVER.STEPS", "length"),
    ("SOLVER.CHECKPOINT_PERIOD", "SOLVER.CHECKPOINT_PERIOD", "length"),
    ("TEST.EVAL_PERIOD", "TEST.EVAL_PERIOD", "length"),
    ("SOLVER.WARMUP_ITERS", "SOLVER.WARMUP_ITERS", "iterations"),
    ("SOLVER.FREEZE_ITERS", "SOLVER.FREEZE_ITERS", "iterations"),
    # late 2020: warm-up counted in epochs whatever the schedule unit
    ("SOLVER.WARMUP_EPOCHS", "SOLVER.WARMUP_ITERS", "epochs_to_iterations"),
)

# ResNet forms FastReID builds, needed for its checkpoints to give the same features.
RESNET_BACKBONE_NAMES = ("build_resnet_backbone", "resnet", "ResNet")
# FastReID's FastDistill project registers ``build_resnet_backbone_distill``: the same ResNet (same
# parameter names, FastReID's stem pooling) with each block's ReLU moved to the next block's input so
# stage outputs are pre-ReLU, and no non-local blocks whatever WITH_NL says. Its features equal
# FastReID's ResNet without non-local blocks; omnireid's DistillerOverhaul reads pre-ReLU stage
# outputs with hooks on the plain ResNet, so the name maps to it.
DISTILL_BACKBONE = "build_resnet_backbone_distill"
FASTREID_RESNET_FORM = MappingProxyType({"MODEL.BACKBONE.STEM_POOL_CEIL": True,
                                         "MODEL.BACKBONE.NL_TYPE": "fastreid_dot_product"})
FASTREID_RESNET_DEPTHS_WITHOUT_NL = ("18x", "34x")


@dataclass
class FastReIDConfig:
    """The translated config, the FastReID generation it was read as, and one note per translation."""

    cfg: CfgNode
    generation: str
    notes: list[str] = field(default_factory=list)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"A": {"B": 1}}`` -> ``{"A.B": 1}`` (leaves only; order kept)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, full + "."))
        else:
            flat[full] = value
    return flat


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten`."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for depth, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                section = ".".join(parents[:depth + 1])
                raise ConfigError(f"{section} is a section (it holds {key}), but the file gives it the value {node!r}")
        if isinstance(node.get(leaf), dict):
            raise ConfigError(f"{key} is a section, but the file gives it the value {value!r}")
        node[leaf] = value
    return nested


def detect_generation(flat: Mapping[str, Any]) -> tuple[str, str | None]:
    """(generation, the key that decided it); ``("1.x", None)`` when nothing older is used."""
    for generation, markers in _GENERATION_MARKERS:
        for key in flat:
            if any(key == m or key.startswith(m + ".") for m in markers):
                if key == "SOLVER.MAX_ITER" and "SOLVER.MAX_EPOCH" in flat:
                    continue  # an omnireid/1.x file setting an explicit iteration budget
                return generation, key
    return "1.x", None


def translate_fastreid_config(path: str, *, generation: str | None = None, schedule_unit: str | None = None,
                              iters_per_epoch: int | None = None, opts: list[str] | None = None,
                              fastreid_model_form: bool = True) -> FastReIDConfig:
    """Read a FastReID YAML file (with its ``_BASE_`` chain) into an omnireid config.

    ``generation`` forces the FastReID generation (else detected). Pre-V1.0 files count the schedule
    in epochs at some commits and in iterations at others: pass ``schedule_unit`` and, when a unit
    has to change, ``iters_per_epoch``. ``fastreid_model_form`` sets the ResNet forms FastReID
    builds (:data:`FASTREID_RESNET_FORM`), so FastReID checkpoints give the same features.
    ``opts`` are ``KEY VALUE`` overrides in omnireid keys, applied last.
    """
    raw = flatten(load_yaml_with_base(path))
    detected, marker = detect_generation(raw)
    if generation is None:
        generation = detected
    elif generation not in GENERATIONS:
        raise ConfigError(f"unknown FastReID generation {generation!r}; choose one of {GENERATIONS}")
    result = FastReIDConfig(cfg=get_cfg(), generation=generation)
    result.notes.append(f"read {path} as a FastReID {generation} config"
                        + (f" (it uses {marker})" if marker and generation == detected else ""))

    translated = _translate_entries(raw, generation, path, schedule_unit, iters_per_epoch, result.notes)
    defaults = {k: v for k, v in FASTREID_DEFAULTS[generation].items() if k not in translated}
    if defaults:
        result.notes.append(f"FastReID {generation} defaults for keys the file does not set: "
                            + ", ".join(f"{k}={v!r}" for k, v in defaults.items()))
    merged = {**defaults, **translated}
    _map_distill_backbone(merged, result.notes)
    if fastreid_model_form:
        _apply_model_form(merged, result.notes)
    try:
        result.cfg.merge_from_dict(nest(merged), source=path)
    except ConfigError as exc:
        if "unknown config key" not in str(exc):
            raise
        raise ConfigError(f"{exc} (not a FastReID key omnireid can translate; see docs/fastreid_compat.md)") from None
    result.cfg.merge_from_list(list(opts or []))
    for note in result.notes:
        logger.info("FastReID config: %s", note)
    return result


def _ignored_key_note(key: str, value: Any, source: str) -> str | None:
    """The note for a FastReID key dropped as harmless, None for a key that is not dropped; an error
    for a key that cannot be translated or whose value cannot be reproduced."""
    if key in REJECTED_KEYS:
        raise ConfigError(f"{source}: FastReID key {key}={value!r} cannot be translated: {REJECTED_KEYS[key]}")
    if key not in IGNORED_KEYS:
        return None
    rule = IGNORED_KEYS[key]
    if not rule.harmless(value):
        raise ConfigError(f"{source}: FastReID key {key}={value!r} cannot be reproduced: {rule.why}")
    return f"ignored {key}={value!r}: {rule.why}"


def _translate_entries(raw: Mapping[str, Any], generation: str, path: str, schedule_unit: str | None,
                       iters_per_epoch: int | None, notes: list[str]) -> dict[str, Any]:
    """Translate the file's flat entries into our flat keys (not yet merged or type-checked)."""
    out: dict[str, Any] = {}
    legacy_schedule = generation == "0.x" and any(k in raw for k, _, _ in _LEGACY_SCHEDULE)
    for key, value in raw.items():
        if isinstance(value, str) and value.strip()[:1] in ("(", "["):
            value = parse_value(value)  # FastReID writes lists as Python tuples in strings
        ignored = _ignored_key_note(key, value, path)
        if ignored:
            notes.append(ignored)
            continue
        if key == "DATALOADER.PK_SAMPLER":
            naive = bool(raw.get("DATALOADER.NAIVE_WAY", False))
            sampler = ("NaiveIdentitySampler" if naive else "BalancedIdentitySampler") if value else "TrainingSampler"
            out["DATALOADER.SAMPLER_TRAIN"] = sampler
            notes.append(f"translated DATALOADER.PK_SAMPLER={value!r}, DATALOADER.NAIVE_WAY={naive!r} to "
                         f"DATALOADER.SAMPLER_TRAIN={sampler!r} (FastReID V1.0 keys)")
            continue
        if legacy_schedule and any(key == k for k, _, _ in _LEGACY_SCHEDULE):
            continue  # below, all together
        if key == "MODEL.HEADS.NAME" and isinstance(value, str) and value in LEGACY_HEADS:
            out.update(LEGACY_HEADS[value])
            notes.append(f"translated MODEL.HEADS.NAME={value!r} to "
                         + ", ".join(f"{k}={v!r}" for k, v in LEGACY_HEADS[value].items()) + " (FastReID pre-V1.0 head)")
            continue
        target, new_value = key, value
        if key in _RULES_BY_KEY:
            rule = _RULES_BY_KEY[key]
            target, new_value = rule.target, rule.convert(value)
            notes.append(f"translated {key}={value!r} to {target}={new_value!r} ({rule.why})")
        value_rule = VALUE_RULES.get(target)
        if value_rule is not None:
            converted = (value_rule(new_value) if callable(value_rule) else
                         value_rule.get(new_value, new_value) if isinstance(new_value, Hashable) else new_value)
            if converted != new_value and not (isinstance(new_value, tuple) and list(new_value) == converted):
                notes.append(f"translated {target}={new_value!r} to {target}={converted!r} (FastReID legacy value)")
            new_value = converted
        out[target] = new_value
    if legacy_schedule:
        out.update(_translate_legacy_schedule(raw, path, schedule_unit, iters_per_epoch, notes))
    return out


def _translate_legacy_schedule(raw: Mapping[str, Any], path: str, unit: str | None, iters_per_epoch: int | None,
                               notes: list[str]) -> dict[str, Any]:
    """pre-V1.0 ``MAX_ITER``/``DELAY_ITERS``/... into epochs (lengths) and iterations (warm-up, freeze)."""
    present = [k for k, _, _ in _LEGACY_SCHEDULE if k in raw]
    if unit not in SCHEDULE_UNITS:
        raise ConfigError(
            f"{path}: pre-V1.0 FastReID schedule ({', '.join(present)}) is in epochs at some FastReID commits and in "
            "iterations at others; say which with --schedule-unit epochs|iterations (schedule_unit=...), and "
            "--iters-per-epoch N (len(train set) // IMS_PER_BATCH) when a unit must change")
    out: dict[str, Any] = {}
    for legacy, target, kind in _LEGACY_SCHEDULE:
        if legacy not in raw:
            continue
        value = raw[legacy]
        needs_scaling = kind == "epochs_to_iterations" or (unit == "epochs") == (kind == "iterations")
        if needs_scaling and value not in (0, [], ()):
            if not iters_per_epoch or iters_per_epoch <= 0:
                raise ConfigError(f"{path}: {legacy}={value!r} is in {'epochs' if kind == 'epochs_to_iterations' else unit}"
                                  f" but omnireid's {target} is in {'epochs' if kind == 'length' else 'iterations'}: "
                                  "pass --iters-per-epoch N")
            to_iterations = kind != "length"
            scale: Callable[[Any], Any] = ((lambda v: int(v) * iters_per_epoch) if to_iterations
                                           else (lambda v: max(1, round(v / iters_per_epoch)) if v else 0))
            new = [scale(v) for v in value] if isinstance(value, (list, tuple)) else scale(value)
        else:
            new = list(value) if isinstance(value, tuple) else value
        out[target] = new
        source_unit = "epochs" if kind == "epochs_to_iterations" else unit
        notes.append(f"translated {legacy}={value!r} ({source_unit}) to {target}={new!r} (FastReID pre-V1.0 schedule)")
    return out


def _map_distill_backbone(merged: dict[str, Any], notes: list[str]) -> None:
    if merged.get("MODEL.BACKBONE.NAME") != DISTILL_BACKBONE:
        return
    merged["MODEL.BACKBONE.NAME"] = RESNET_BACKBONE_NAMES[0]
    notes.append(f"translated MODEL.BACKBONE.NAME={DISTILL_BACKBONE!r} to {RESNET_BACKBONE_NAMES[0]!r} (FastReID "
                 "FastDistill's ResNet: same weights and features; DistillerOverhaul reads its pre-ReLU stages "
                 "with hooks)")
    if merged.get("MODEL.BACKBONE.WITH_NL"):
        merged["MODEL.BACKBONE.WITH_NL"] = False
        notes.append(f"set MODEL.BACKBONE.WITH_NL=False: {DISTILL_BACKBONE} builds no non-local blocks")


def _apply_model_form(merged: dict[str, Any], notes: list[str]) -> None:
    """ResNet forms of FastReID's builder: stem pooling, non-local block, no non-local for 18x/34x."""
    name = merged.get("MODEL.BACKBONE.NAME", get_cfg().MODEL.BACKBONE.NAME)
    if name not in RESNET_BACKBONE_NAMES:
        return
    for key, value in FASTREID_RESNET_FORM.items():
        merged[key] = value
    notes.append("set " + ", ".join(f"{k}={v!r}" for k, v in FASTREID_RESNET_FORM.items())
                 + " (FastReID's ResNet stem pooling and non-local block)")
    depth = _depth_string(merged.get("MODEL.BACKBONE.DEPTH", get_cfg().MODEL.BACKBONE.DEPTH))
    if merged.get("MODEL.BACKBONE.WITH_NL") and depth in FASTREID_RESNET_DEPTHS_WITHOUT_NL:
        merged["MODEL.BACKBONE.WITH_NL"] = False
        notes.append(f"set MODEL.BACKBONE.WITH_NL=False: FastReID builds no non-local blocks for ResNet-{depth}")


@register_key_translator
def translate_legacy_key(node: CfgNode, full_key: str, value: Any, source: str) -> bool:
    """Config-load hook: one-to-one FastReID V1.0 renames, ignorable keys; errors for the rest."""
    ignored = _ignored_key_note(full_key, value, source)
    if ignored:
        logger.info("%s: %s", source, ignored)
        return True
    if full_key in ("DATALOADER.PK_SAMPLER", "SOLVER.DELAY_ITERS", "SOLVER.WARMUP_EPOCHS") or \
            full_key.startswith("SOLVER.SWA"):
        raise ConfigError(f"{source}: FastReID key {full_key} depends on other keys or on the FastReID version; "
                          f"translate the whole file with `omnireid convert-fastreid --config-file {source} "
                          "--output DIR`")
    rule = _RULES_BY_KEY.get(full_key)
    if rule is None:
        return False
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    prefix = parent + "." if parent else ""
    if not rule.target.startswith(prefix):
        return False
    *path, leaf = rule.target[len(prefix):].split(".")
    target_node = node
    for part in path:
        target_node = target_node[part]
    new_value = coerce(target_node[leaf], rule.convert(value), rule.target, source)
    target_node[leaf] = new_value
    logger.info("%s: translated %s=%r to %s=%r (%s)", source, full_key, value, rule.target, new_value, rule.why)
    return True
