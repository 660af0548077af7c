"""Training and evaluation engine: a hook-driven loop, the trainer's build_* seams, demos."""
from .checkpoint import Checkpointer, unwrap
from .hooks import EvalHook, HookBase
from .inference import extract_features, format_results_table, inference_on_dataset, move_batch
from .launch import distributed_context
from .setup import default_setup, save_metadata, seed_everything, setup_cfg, setup_logging
from .trainer import MODEL_SHAPE_REGISTRY, TRAINER_REGISTRY, Trainer, TrainerBase, evaluate, trainer_class

__all__ = ["MODEL_SHAPE_REGISTRY", "TRAINER_REGISTRY", "Checkpointer", "EvalHook", "HookBase", "Trainer",
           "TrainerBase", "default_setup", "distributed_context", "evaluate", "extract_features",
           "format_results_table", "inference_on_dataset", "move_batch", "save_metadata",
           "seed_everything", "setup_cfg", "setup_logging", "trainer_class", "unwrap"]
