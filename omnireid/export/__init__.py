"""Export to deployment formats (ONNX, TorchScript, OpenVINO, Caffe, TensorRT) with parity checks.

Each format is one module registering an ``Exporter`` in ``EXPORTER_REGISTRY``; ``export_model``
runs any of them and writes ``export_report.json``. Heavy runtimes are imported only when used.
"""
from . import caffe, onnx_exporter, openvino_exporter, tensorrt_exporter, torchscript_exporter  # noqa: F401
from .api import REPORT_NAME, export_model, measure_parity
from .base import (EXPORTER_REGISTRY, ExportedArtifact, ExportError, Exporter, ExportOptions, deploy_copy,
                   switch_to_deploy)
from .caffe import CAFFE_OP_HANDLERS, CaffeExportError, convert_to_caffe

__all__ = [
    "CAFFE_OP_HANDLERS", "EXPORTER_REGISTRY", "REPORT_NAME",
    "CaffeExportError", "ExportError", "ExportOptions", "ExportedArtifact", "Exporter", "convert_to_caffe",
    "deploy_copy", "export_model", "measure_parity", "switch_to_deploy",
]
