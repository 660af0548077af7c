"""Runs under ``torchrun`` (gloo) or alone: Partial FC steps on fixed data, for tests/test_face_partial_fc.py.

``python face_partial_fc_worker.py OUT [--resume CKPT] [--steps N] [--save-at K]`` trains a tiny
linear "backbone" + PartialFCHead + PartialFCLoss with SGD (momentum, weight decay), wrapped in
DistributedDataParallel when several processes run, and writes ``OUT/result_w{world}.pt`` (rank 0):
the first step's loss and gradients (every rank's embedding gradient, the gathered centre gradient)
and the final full weights; ``--save-at`` writes a checkpoint through the engine's Checkpointer.
"""
from __future__ import annotations

import argparse
import gc
import os

import torch
import torch.distributed as dist
from torch import nn

from omnireid.engine.checkpoint import Checkpointer
from omnireid.tasks.face.partial_fc import PartialFCHead, PartialFCLoss
from omnireid.utils import comm
from omnireid.utils.file_io import load_checkpoint_file
from omnireid.utils.sharding import exclude_sharded_from_ddp, gather_rows

NUM_CLASSES, DIM, GLOBAL_BATCH = 11, 8, 12


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(6, DIM)
        self.heads = PartialFCHead(in_channels=DIM, num_classes=NUM_CLASSES, cls_layer="CombinedMarginSoftmax",
                                   scale=16.0, margin=0.3, m3=0.1, sample_rate=1.0)
        self.loss = PartialFCLoss()

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        embeddings = self.backbone(x)
        embeddings.retain_grad()
        self.last_embeddings = embeddings
        return self.loss(self.heads.compute_outputs(embeddings[:, :, None, None], targets), targets)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's slice of the global batch of ``step``."""
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(GLOBAL_BATCH, 6, generator=g)
    t = torch.randint(0, NUM_CLASSES, (GLOBAL_BATCH,), generator=g)
    per = GLOBAL_BATCH // comm.get_world_size()
    r = comm.get_rank()
    return x[r * per:(r + 1) * per], t[r * per:(r + 1) * per]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--resume", default="")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--save-at", type=int, default=0)
    parser.add_argument("--tag", default="run")
    args = parser.parse_args()
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    checkpointer = Checkpointer(model, args.out, optimizer=optimizer)
    start = 0
    if args.resume:
        start = int(checkpointer.restore(load_checkpoint_file(args.resume), args.resume)["iteration"])
    wrapped = model
    if comm.get_world_size() > 1:
        exclude_sharded_from_ddp(model)
        wrapped = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    result: dict = {}
    for step in range(start, args.steps):
        x, t = batch(step)
        loss = wrapped(x, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step == start:
            result["loss"] = loss.detach()
            result["embedding_grad"] = comm.all_gather_tensor(model.last_embeddings.grad)
            result["weight_grad"] = gather_rows(model.heads.classifier.weight.grad, NUM_CLASSES)
            result["backbone_grad"] = model.backbone.weight.grad.clone()
        optimizer.step()
        if step + 1 == args.save_at:
            checkpointer.save(f"{args.tag}_at{args.save_at}", iteration=step + 1)
    result["weight"] = gather_rows(model.heads.classifier.weight.detach(), NUM_CLASSES)
    result["backbone"] = model.backbone.weight.detach().clone()
    if comm.is_main_process():
        torch.save(result, os.path.join(args.out, f"{args.tag}_w{comm.get_world_size()}.pt"))
    if comm.get_world_size() > 1:
        del wrapped, model, optimizer, checkpointer
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
