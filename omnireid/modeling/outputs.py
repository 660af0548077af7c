"""Named model outputs: what an eval-mode model returns and how deployment picks from it.

Every meta-architecture returns a dict in eval mode: ``features`` (N, D), the embedding used for
retrieval, always; ``logits`` (N, C, margin-free class scores) when the model has a classifier;
``attributes`` (N, A) when it has an attribute head; tasks may add more. Deployment (export, the
PyTorch predictor, ``omnireid extract``) runs a model through :class:`NamedOutputs`, which returns
plain tensors in a fixed order, so a traced graph has named tensor outputs. A module whose optional
outputs cost work (a classifier's logits) has ``restrict_outputs(names)``; NamedOutputs calls it so
the deployed graph computes only what it returns.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

EMBEDDING = "features"  # the output every model has, and the one deployment produces by default
DEPLOY_OUTPUTS_ATTR = "deploy_outputs"


def default_outputs(model: nn.Module) -> tuple[str, ...]:
    """The outputs a deployed copy of ``model`` gives unless the user picks others.

    A module declares them as ``deploy_outputs`` (a tuple of names, or a property): the model itself
    first, then its submodules in order (an image classifier declares ``("logits",)``, an attribute
    head ``("attributes",)``); a model declaring nothing deploys its embedding, ``("features",)``.
    """
    for module in model.modules():
        declared = getattr(module, DEPLOY_OUTPUTS_ATTR, None)
        if declared:
            return tuple(declared)
    return (EMBEDDING,)


class NamedOutputs(nn.Module):
    """``model(images)`` reduced to the outputs ``names``: one tensor for one name, else a tuple.

    A model that already returns a bare tensor (a plain feature extractor) is taken as returning
    ``{"features": tensor}``. Submodules with ``restrict_outputs(names)`` are told which outputs are
    wanted (this configures ``model``: wrap a copy when the full outputs are still needed elsewhere).
    """

    def __init__(self, model: nn.Module, names: Sequence[str] = (EMBEDDING,)) -> None:
        super().__init__()
        if not names:
            raise ValueError("NamedOutputs needs at least one output name")
        self.model = model
        self.names = tuple(names)
        for module in model.modules():
            restrict = getattr(module, "restrict_outputs", None)
            if callable(restrict):
                restrict(self.names)

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outputs = self.model(images)
        if isinstance(outputs, torch.Tensor):
            outputs = {EMBEDDING: outputs}
        missing = [name for name in self.names if name not in outputs]
        if missing:
            raise KeyError(f"{type(self.model).__name__} has no output {missing}; its eval outputs are {sorted(outputs)}")
        selected = tuple(outputs[name] for name in self.names)
        return selected[0] if len(selected) == 1 else selected
