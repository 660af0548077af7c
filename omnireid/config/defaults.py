"""The default configuration. Every valid key is declared here, with FastReID's key names.

Values in pixel space (PIXEL_MEAN, REA.VALUE) are on the 0-255 scale, as in FastReID.
"""
from __future__ import annotations

from typing import Callable

from .config import CfgNode as CN
from .config import ConfigError

_IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
_IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]

_C = CN()
_C.SEED = 0  # negative: a random seed (logged); non-negative: fully reproducible runs
_C.TRAINER = CN()
_C.TRAINER.NAME = "Trainer"  # a TRAINER_REGISTRY entry (omnireid.engine); tasks prefer registering pieces
_C.OUTPUT_DIR = "logs/"
_C.CUDNN_BENCHMARK = False

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.DEVICE = "auto"  # "auto" (cuda if available), "cuda", "cpu"
_C.MODEL.META_ARCHITECTURE = "Baseline"
_C.MODEL.FREEZE_LAYERS = []  # module names (e.g. "backbone") frozen for SOLVER.FREEZE_ITERS
_C.MODEL.WEIGHTS = ""  # full-model checkpoint to start from / evaluate
_C.MODEL.PIXEL_MEAN = list(_IMAGENET_MEAN)
_C.MODEL.PIXEL_STD = list(_IMAGENET_STD)
_C.MODEL.QUEUE_SIZE = 8192  # MoCo memory queue
# NHWC weights/activations: auto (on for conv models on CPU, where oneDNN prefers NHWC, and on CUDA with
# AMP), true, false. NHWC kernels sum in another order: equal within float tolerance, not bit-identical.
_C.MODEL.CHANNELS_LAST = "auto"
# torch.compile (in place: checkpoints unchanged). DYNAMIC auto = recompile with dynamic shapes on a new size.
_C.MODEL.COMPILE = CN({"ENABLED": False, "MODE": "default", "BACKEND": "inductor", "DYNAMIC": "auto"})

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"
_C.MODEL.BACKBONE.DEPTH = "50x"
_C.MODEL.BACKBONE.LAST_STRIDE = 1
_C.MODEL.BACKBONE.FEAT_DIM = 2048
_C.MODEL.BACKBONE.NORM = "BN"
_C.MODEL.BACKBONE.WITH_IBN = False
_C.MODEL.BACKBONE.WITH_SE = False
_C.MODEL.BACKBONE.WITH_NL = False
# ResNet forms FastReID checkpoints need (set by `omnireid convert-fastreid`): stem max pool without
# padding and with ceil_mode (torchvision: padding 1), and FastReID's non-local block.
_C.MODEL.BACKBONE.STEM_POOL_CEIL = False
_C.MODEL.BACKBONE.NL_TYPE = "embedded_gaussian"  # or "fastreid_dot_product"
_C.MODEL.BACKBONE.PRETRAIN = False
_C.MODEL.BACKBONE.PRETRAIN_PATH = ""
_C.MODEL.BACKBONE.VARIANT = ""  # model name for generic backbones (e.g. a timm model name)
_C.MODEL.BACKBONE.WIDTH_MULT = 1.0  # width multiplier (MobileNet/ShuffleNet/OSNet)
_C.MODEL.BACKBONE.DEPLOY = False  # re-parameterised (deploy) form, e.g. RepVGG
# ViT
_C.MODEL.BACKBONE.SIE_COE = 3.0
_C.MODEL.BACKBONE.STRIDE_SIZE = [16, 16]
_C.MODEL.BACKBONE.DROP_PATH_RATIO = 0.1
_C.MODEL.BACKBONE.DROP_RATIO = 0.0
_C.MODEL.BACKBONE.ATT_DROP_RATE = 0.0

_C.MODEL.HEADS = CN()
_C.MODEL.HEADS.NAME = "EmbeddingHead"
_C.MODEL.HEADS.NORM = "BN"
_C.MODEL.HEADS.NUM_CLASSES = 0  # 0: inferred from the training data
_C.MODEL.HEADS.EMBEDDING_DIM = 0  # 0: no embedding conv
_C.MODEL.HEADS.WITH_BNNECK = False
_C.MODEL.HEADS.NECK_FEAT = "before"  # "before" or "after" the BNNeck, for the test feature
_C.MODEL.HEADS.POOL_LAYER = "GlobalAvgPool"
_C.MODEL.HEADS.CLS_LAYER = "Linear"
_C.MODEL.HEADS.MARGIN = 0.0
_C.MODEL.HEADS.SCALE = 1.0
_C.MODEL.HEADS.NUM_CAMERAS = 0  # for side-information embeddings; 0: inferred from the data

_C.MODEL.LOSSES = CN()
_C.MODEL.LOSSES.NAME = ["CrossEntropyLoss"]
_C.MODEL.LOSSES.CE = CN({"EPSILON": 0.0, "ALPHA": 0.2, "SCALE": 1.0})
_C.MODEL.LOSSES.FL = CN({"ALPHA": 0.25, "GAMMA": 2.0, "SCALE": 1.0})
_C.MODEL.LOSSES.TRI = CN({"MARGIN": 0.3, "NORM_FEAT": False, "HARD_MINING": True, "SCALE": 1.0})
_C.MODEL.LOSSES.CIRCLE = CN({"MARGIN": 0.25, "GAMMA": 128.0, "SCALE": 1.0})
_C.MODEL.LOSSES.COSFACE = CN({"MARGIN": 0.25, "GAMMA": 128.0, "SCALE": 1.0})

# ---------------------------------------------------------------------------------------------
# Knowledge distillation (MODEL.META_ARCHITECTURE Distiller / DistillerOverhaul)
# ---------------------------------------------------------------------------------------------
_C.KD = CN()
_C.KD.MODEL_CONFIG = []  # teacher config files
_C.KD.MODEL_WEIGHTS = []  # teacher checkpoints, one per config
_C.KD.TEMPERATURE = 16.0
_C.KD.LOSS_WEIGHT = 1.0
_C.KD.OVERHAUL_WEIGHT = 0.1  # on sum/batch/1000 (the paper's scale): FastReID FastDistill's sum/batch/10000
_C.KD.STAGE_WEIGHTS = [1.0 / 8, 1.0 / 4, 1.0 / 2, 1.0]
_C.KD.EMA = CN({"ENABLED": False, "MOMENTUM": 0.999})

# ---------------------------------------------------------------------------------------------
# Input pipeline (torchvision.transforms.v2)
# ---------------------------------------------------------------------------------------------
_C.INPUT = CN()
_C.INPUT.SIZE_TRAIN = [256, 128]
_C.INPUT.SIZE_TEST = [256, 128]
_C.INPUT.INTERPOLATION = "bicubic"
_C.INPUT.CROP = CN({"ENABLED": False, "SIZE": [224, 224], "SCALE": [0.16, 1.0], "RATIO": [3.0 / 4, 4.0 / 3]})
_C.INPUT.FLIP = CN({"ENABLED": False, "PROB": 0.5})
_C.INPUT.PADDING = CN({"ENABLED": False, "MODE": "constant", "SIZE": 10})
_C.INPUT.CJ = CN({"ENABLED": False, "PROB": 0.5, "BRIGHTNESS": 0.15, "CONTRAST": 0.15,
                  "SATURATION": 0.1, "HUE": 0.1})
_C.INPUT.AFFINE = CN({"ENABLED": False, "PROB": 0.5, "DEGREES": 10.0, "TRANSLATE": [0.05, 0.05],
                      "SCALE": [0.9, 1.1], "SHEAR": 5.0})
_C.INPUT.AUTOAUG = CN({"ENABLED": False, "PROB": 0.0})
_C.INPUT.AUGMIX = CN({"ENABLED": False, "PROB": 0.0})
_C.INPUT.REA = CN({"ENABLED": False, "PROB": 0.5, "VALUE": list(_IMAGENET_MEAN)})
_C.INPUT.RPT = CN({"ENABLED": False, "PROB": 0.5})

# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------
_C.DATASETS = CN()
_C.DATASETS.ROOT = ""  # empty: $OMNIREID_DATASETS, else "datasets"
_C.DATASETS.NAMES = ["Market1501"]
_C.DATASETS.TESTS = ["Market1501"]
_C.DATASETS.COMBINEALL = False  # train on train + query + gallery of each training set
# drop training identities with fewer images (per dataset and split; 0: keep all); FastReID NAIC20's RM_LT = 2
_C.DATASETS.MIN_IMAGES_PER_ID = 0
_C.DATASETS.SKIP_CORRUPT = False  # skip unreadable images (counted in the log) instead of failing
_C.DATASETS.CSV = CN({"TRAIN": "", "QUERY": "", "GALLERY": ""})  # CustomCSV lists
_C.DATASETS.VEHICLEID_TEST_SIZE = "small"  # small / medium / large
_C.DATASETS.VERIWILD_TEST_SIZE = "small"  # small / medium / large
_C.DATASETS.CUHK03_LABELED = False
_C.DATASETS.CUHK03_SPLIT = "new"  # "new" protocol (767/700)

# ---------------------------------------------------------------------------------------------
# Data loader
# ---------------------------------------------------------------------------------------------
_C.DATALOADER = CN()
_C.DATALOADER.SAMPLER_TRAIN = "NaiveIdentitySampler"
_C.DATALOADER.NUM_INSTANCE = 4  # K in P x K
_C.DATALOADER.NUM_WORKERS = 4

# ---------------------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------------------
_C.SOLVER = CN()
# Mixed precision. DTYPE auto: fp16 on CUDA; on CPU bf16 where it is native (AVX512-BF16/AMX), else fp32.
# bf16 or fp16 force a dtype.
_C.SOLVER.AMP = CN({"ENABLED": True, "DTYPE": "auto"})
_C.SOLVER.OPT = "Adam"
_C.SOLVER.OPT_IMPL = "auto"  # auto (fused where supported, else foreach), fused, foreach, for-loop
_C.SOLVER.MAX_EPOCH = 120
_C.SOLVER.MAX_ITER = 0  # > 0 overrides MAX_EPOCH x iterations per epoch
_C.SOLVER.BASE_LR = 3.5e-4
_C.SOLVER.BIAS_LR_FACTOR = 1.0
_C.SOLVER.HEADS_LR_FACTOR = 1.0
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = 0.0005
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0005
_C.SOLVER.WEIGHT_DECAY_BIAS = 0.0005
_C.SOLVER.SCHED = "MultiStepLR"
_C.SOLVER.STEPS = [40, 90]
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.DELAY_EPOCHS = 0
_C.SOLVER.ETA_MIN_LR = 1e-7
_C.SOLVER.WARMUP_FACTOR = 0.1
_C.SOLVER.WARMUP_ITERS = 0
_C.SOLVER.WARMUP_METHOD = "linear"
_C.SOLVER.FREEZE_ITERS = 0
_C.SOLVER.CLIP_GRADIENTS = CN({"ENABLED": False, "CLIP_TYPE": "norm", "CLIP_VALUE": 5.0, "NORM_TYPE": 2.0})
_C.SOLVER.CHECKPOINT_PERIOD = 20
_C.SOLVER.IMS_PER_BATCH = 64  # total over all processes

# ---------------------------------------------------------------------------------------------
# Test
# ---------------------------------------------------------------------------------------------
_C.TEST = CN()
_C.TEST.EVALUATOR = ""  # "": the evaluator registered for each test set's protocol; a name overrides it
_C.TEST.EVAL_PERIOD = 20
_C.TEST.IMS_PER_BATCH = 128  # total over all processes
_C.TEST.METRIC = "cosine"  # cosine / euclidean
_C.TEST.MEMORY_BUDGET_MB = 1024  # bound on the query x gallery block evaluated at once
_C.TEST.ROC = CN({"ENABLED": False})
_C.TEST.FLIP = CN({"ENABLED": False})
_C.TEST.AQE = CN({"ENABLED": False, "ALPHA": 3.0, "QE_TIME": 1, "QE_K": 5})
_C.TEST.RERANK = CN({"ENABLED": False, "K1": 20, "K2": 6, "LAMBDA": 0.3})
# Re-estimate BatchNorm statistics over NUM_ITER training batches of DATASET before each evaluation.
_C.TEST.PRECISE_BN = CN({"ENABLED": False, "DATASET": "Market1501", "NUM_ITER": 300})

# ---------------------------------------------------------------------------------------------
# Export / deployment
# ---------------------------------------------------------------------------------------------
_C.EXPORT = CN()
_C.EXPORT.OPSET = 17
_C.EXPORT.DYNAMIC_BATCH = True
_C.EXPORT.BATCH_SIZE = 1


ConfigExtension = Callable[[CN], None]
# name -> function adding a config section; filled by ``register_config`` (tasks, plugins)
_EXTENSIONS: dict[str, ConfigExtension] = {}


def register_config(name: str) -> Callable[[ConfigExtension], ConfigExtension]:
    """Decorator: ``fn(cfg)`` adds keys (usually one section) to every config ``get_cfg`` returns.

    How a task extends the configuration without editing this file (detectron2's ``add_*_config``)::

        @register_config("FACE")
        def add_face_config(cfg):
            cfg.FACE = CN({"MARGIN": 0.5})

    Keys an extension adds are then as strict as the built-in ones (unknown keys stay errors).
    """

    def deco(fn: ConfigExtension) -> ConfigExtension:
        if name in _EXTENSIONS and _EXTENSIONS[name] is not fn:
            raise ConfigError(f"config extension {name!r} is already registered (by {_EXTENSIONS[name]!r})")
        _EXTENSIONS[name] = fn
        return fn

    return deco


def registered_configs() -> list[str]:
    """Names of the registered config extensions, in registration order."""
    return list(_EXTENSIONS)


def get_cfg() -> CN:
    """A fresh, mutable copy of the defaults with every registered extension applied."""
    cfg = _C.clone()
    for name, extend in _EXTENSIONS.items():
        before = set(cfg.flat_keys())
        extend(cfg)
        clobbered = [k for k in before if k not in set(cfg.flat_keys())]
        if clobbered:
            raise ConfigError(f"config extension {name!r} removed existing keys {sorted(clobbered)[:5]}")
    return cfg
