"""The ``caffe`` export format: capture with ``torch.export``, convert, write both files."""
from __future__ import annotations

import os

import torch
from torch import nn

from ..base import EXPORTER_REGISTRY, ExportedArtifact, ExportError, Exporter, ExportOptions
from . import ops  # noqa: F401  (registers the op handlers the converter dispatches to)
from .converter import INPUT_BLOB, CaffeConverter
from .wire import CaffeModel, write_caffe


def convert_to_caffe(model: nn.Module, options: ExportOptions, name: str = "omnireid") -> CaffeModel:
    """The Caffe net and weights of ``model``; raises CaffeExportError listing every unsupported op."""
    example = options.example_input(2)  # not 1: a size-1 batch would be specialised away
    try:
        program = torch.export.export(model, (example,), strict=False)
    except Exception as exc:  # torch.export reports data-dependent control flow etc.
        raise ExportError(f"cannot capture the model's graph with torch.export for Caffe: {exc}") from exc
    return CaffeConverter(program, options.batch_size, name=name, output_names=options.outputs).convert()


@EXPORTER_REGISTRY.register("caffe")
class CaffeExporter(Exporter):
    name = "caffe"

    def export(self, model: nn.Module, options: ExportOptions, output_dir: str) -> ExportedArtifact:
        caffe_model = convert_to_caffe(model, options)
        prototxt = os.path.join(output_dir, "model.prototxt")
        caffemodel = os.path.join(output_dir, "model.caffemodel")
        write_caffe(caffe_model, prototxt, caffemodel)
        height, width = options.input_size
        info = {"layers": caffe_model.layer_counts(), "input_blob": INPUT_BLOB,
                "writer": "omnireid caffe.proto subset (BVLC field numbers)",
                "bn_folded": "into the preceding Convolution/InnerProduct where it has no other consumer"}
        return ExportedArtifact(format=self.name, path=prototxt, files=[prototxt, caffemodel],
                                input_shape=[options.batch_size, 3, height, width], input_name=INPUT_BLOB,
                                output_names=list(options.outputs), info=info)
