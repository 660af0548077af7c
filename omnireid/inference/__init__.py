"""Deployment-side inference: one ``Predictor`` for PyTorch, TorchScript, ONNX Runtime, OpenVINO,
TensorRT and Caffe (OpenCV) artifacts."""
from .predictor import PREDICTOR_BACKENDS, Backend, Predictor, build_model_from_config

__all__ = ["PREDICTOR_BACKENDS", "Backend", "Predictor", "build_model_from_config"]
