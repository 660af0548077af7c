"""Deployment-side inference: one ``Predictor`` for PyTorch, TorchScript, ONNX Runtime, OpenVINO,
TensorRT and Caffe (OpenCV) artifacts, with the ``metadata.json`` that travels with them."""
from .metadata import MetadataError, read_metadata
from .predictor import PREDICTOR_BACKENDS, Backend, Predictor, build_model_from_config

__all__ = ["PREDICTOR_BACKENDS", "Backend", "MetadataError", "Predictor", "build_model_from_config", "read_metadata"]
