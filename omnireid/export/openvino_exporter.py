"""OpenVINO IR (``model.xml`` + ``model.bin``) through OpenVINO's own converter, FP32 or FP16 weights.

The model goes through ONNX first (the same graph the ONNX format ships), then OpenVINO's ONNX
frontend; ``--fp16`` compresses the weights to FP16 (computation precision is a runtime choice of
the device).
"""
from __future__ import annotations

import os
import tempfile

from torch import nn

from .base import (EXPORTER_REGISTRY, FP16_MIN_COSINE, ExportedArtifact, ExportError, Exporter, ExportOptions,
                   input_shape)
from .onnx_exporter import export_onnx


def import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise ExportError("OpenVINO export needs the openvino package: pip install 'omnireid[openvino]'") from exc
    return openvino


@EXPORTER_REGISTRY.register("openvino")
class OpenVinoExporter(Exporter):
    name = "openvino"

    def export(self, model: nn.Module, options: ExportOptions, output_dir: str) -> ExportedArtifact:
        ov = import_openvino()
        xml_path = os.path.join(output_dir, "model.xml")
        with tempfile.TemporaryDirectory(prefix="omnireid-ov-") as tmp:
            onnx_path = os.path.join(tmp, "model.onnx")
            onnx_info = export_onnx(model, onnx_path, options)
            # OpenVINO's ONNX frontend through the runtime core: the same conversion as
            # ``openvino.convert_model`` without its telemetry (which writes to ~/intel and tries the network)
            ov_model = ov.Core().read_model(onnx_path)
        height, width = options.input_size
        batch = -1 if options.dynamic_batch else options.batch_size
        ov_model.reshape({ov_model.inputs[0]: ov.PartialShape([batch, 3, height, width])})
        ov.save_model(ov_model, xml_path, compress_to_fp16=options.fp16)
        info = {"openvino": ov.get_version(), "weights": "FP16" if options.fp16 else "FP32",
                "converter": "openvino ONNX frontend (Core.read_model) + save_model",
                "converted_from": f"ONNX opset {onnx_info['opset']} ({onnx_info['exporter']})"}
        bin_path = os.path.splitext(xml_path)[0] + ".bin"
        names = [output.get_any_name() for output in ov_model.outputs]
        if names != list(options.outputs):
            raise ExportError(f"{xml_path}: expected the outputs {list(options.outputs)}, got {names}")
        return ExportedArtifact(format=self.name, path=xml_path, files=[xml_path, bin_path],
                                input_shape=input_shape(options), output_names=names, info=info)

    def predictor_kwargs(self, options: ExportOptions) -> dict:
        return {"inference_precision": "f32"}  # parity is measured at full compute precision

    def parity_tolerance(self, options: ExportOptions) -> dict[str, float | None]:
        if options.fp16:  # FP16 weights keep ~3 significant digits
            return {"relative_max_abs_diff": None, "min_cosine": FP16_MIN_COSINE}
        return super().parity_tolerance(options)
