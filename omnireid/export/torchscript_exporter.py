"""TorchScript: ``torch.jit.trace`` + ``torch.jit.freeze`` (freezing folds BatchNorm into convolutions).

The input shape is stored inside the archive (``omnireid.json`` extra file) so a predictor knows the
image size without the config.
"""
from __future__ import annotations

import json
import os
import warnings

import torch
from torch import nn

from .base import EXPORTER_REGISTRY, INPUT_NAME, ExportedArtifact, Exporter, ExportOptions, input_shape

META_FILE = "omnireid.json"


@EXPORTER_REGISTRY.register("torchscript")
class TorchScriptExporter(Exporter):
    name = "torchscript"

    def export(self, model: nn.Module, options: ExportOptions, output_dir: str) -> ExportedArtifact:
        path = os.path.join(output_dir, "model.ts")
        example = options.example_input(max(2, options.batch_size))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit is deprecated upstream
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            traced = torch.jit.trace(model, example, check_trace=False)
            frozen = torch.jit.freeze(traced.eval())
            meta = {"input_shape": input_shape(options), "input_name": INPUT_NAME, "output_names": list(options.outputs)}
            torch.jit.save(frozen, path, _extra_files={META_FILE: json.dumps(meta)})
        batch_norms = sum(node.kind() == "aten::batch_norm" for node in frozen.graph.nodes())
        info = {"torch": torch.__version__, "method": "torch.jit.trace + torch.jit.freeze",
                "batchnorm_ops_left": batch_norms}  # those not right after a convolution cannot be folded
        return ExportedArtifact(format=self.name, path=path, files=[path], input_shape=input_shape(options),
                                output_names=list(options.outputs), info=info)
