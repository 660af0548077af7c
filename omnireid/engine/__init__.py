"""Training and evaluation engine: a hook-driven loop and the pieces around it."""
from .checkpoint import Checkpointer, load_model_weights, unwrap
from .hooks import HookBase
from .inference import extract_features, format_results_table, inference_on_dataset
from .launch import distributed_context
from .setup import default_setup, seed_everything, setup_cfg, setup_logging
from .trainer import Trainer, TrainerBase, evaluate

__all__ = ["Checkpointer", "HookBase", "Trainer", "TrainerBase", "default_setup", "distributed_context",
           "evaluate", "extract_features", "format_results_table", "inference_on_dataset", "load_model_weights",
           "seed_everything", "setup_cfg", "setup_logging", "unwrap"]
