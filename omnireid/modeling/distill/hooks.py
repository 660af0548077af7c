"""The training hook keeping ``KD.EMA``'s self-teacher up to date (imported lazily by the trainer side)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from omnireid.engine.hooks import HookBase

if TYPE_CHECKING:
    from omnireid.modeling.meta_arch.distiller import Distiller


class EMATeacherUpdate(HookBase):
    """Copies the student into the EMA teacher when training starts from scratch (so ``MODEL.WEIGHTS``
    initialisation is honoured), then averages it in after every optimizer step.

    On resume the averaged weights come back from the checkpoint (they are part of the distiller's
    state dict), so no copy is made. It must run before the checkpointer in ``after_step``.
    """

    def __init__(self, distiller: "Distiller", momentum: float) -> None:
        self.distiller = distiller
        self.momentum = momentum

    def before_train(self) -> None:
        if self.trainer.start_iter == 0:
            self.distiller.update_ema_teacher(momentum=0.0)

    def after_step(self) -> None:
        self.distiller.update_ema_teacher(self.momentum)
