"""Vision Transformer for reID (TransReID, He et al., ICCV 2021) as configured by FastReID.

- overlapping patches: a ``patch x patch`` convolution with stride ``MODEL.BACKBONE.STRIDE_SIZE``;
- stochastic depth growing linearly to ``DROP_PATH_RATIO``, dropout ``DROP_RATIO`` / ``ATT_DROP_RATE``;
- side-information embedding (SIE): a learned vector per camera, scaled by ``SIE_COE`` and added
  to every token. Unlike FastReID's builder, the camera ids really reach it: the backbone sets
  ``accepts_camids = True`` and its forward takes ``camids``; meta-architectures call
  ``backbone(images, camids=camids)`` for such backbones (``camids=None`` omits the camera term,
  e.g. in an exported graph). The number of cameras is ``MODEL.HEADS.NUM_CAMERAS``.

The output is the final CLS token as an ``(N, C, 1, 1)`` map, so pooling heads work unchanged.
Parameter names follow timm/FastReID ViT checkpoints (``blocks.i.attn.qkv`` ...).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from omnireid.utils.errors import ConfigError

from .backbone_utils import choose_variant, load_pretrained_backbone
from .registry import BACKBONE_REGISTRY

logger = logging.getLogger(__name__)


class PatchEmbedOverlap(nn.Module):
    """Image -> tokens with a ``patch_size`` convolution at ``stride`` (overlapping when stride < patch)."""

    def __init__(self, img_size: tuple[int, int], patch_size: int, stride: tuple[int, int], embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.stride = stride
        self.num_y = (img_size[0] - patch_size) // stride[0] + 1
        self.num_x = (img_size[1] - patch_size) // stride[1] + 1
        self.num_patches = self.num_y * self.num_x
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # (N, C, gy, gx)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, qk_scale: float | None, attn_drop: float,
                 proj_drop: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = self.attn_drop((q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block with per-sample stochastic depth on both residual branches."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, qk_scale: float | None,
                 drop: float, attn_drop: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = StochasticDepth(drop_path, mode="row") if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """ViT returning the CLS token as ``(N, embed_dim, 1, 1)``; see the module docstring for SIE."""

    accepts_camids = True

    def __init__(self, img_size: tuple[int, int] = (256, 128), patch_size: int = 16,
                 stride_size: tuple[int, int] = (16, 16), embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: float | None = None,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 num_cameras: int = 0, sie_coe: float = 0.0) -> None:
        super().__init__()
        img_size, stride_size = tuple(img_size), tuple(stride_size)
        if any(s > patch_size or s < 1 for s in stride_size):
            raise ConfigError(f"MODEL.BACKBONE.STRIDE_SIZE={list(stride_size)} must be in [1, {patch_size}]")
        if img_size[0] < patch_size or img_size[1] < patch_size:
            raise ConfigError(f"input size {list(img_size)} is smaller than the {patch_size}px patch")
        self.out_channels = self.embed_dim = embed_dim
        self.patch_embed = PatchEmbedOverlap(img_size, patch_size, stride_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.sie_coe = float(sie_coe)
        # one learned vector per camera; absent when SIE is off or the camera count is unknown
        self.sie_embed = (nn.Parameter(torch.zeros(num_cameras, 1, embed_dim))
                          if self.sie_coe > 0 and num_cameras > 0 else None)
        self.pos_drop = nn.Dropout(drop_rate)
        # stochastic depth grows linearly from 0 (first block) to drop_path_rate (last block)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias, qk_scale, drop_rate,
                                          attn_drop_rate, rate) for rate in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        for p in (self.cls_token, self.pos_embed) + ((self.sie_embed,) if self.sie_embed is not None else ()):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.kaiming_normal_(self.patch_embed.proj.weight, mode="fan_out", nonlinearity="relu")

    def _positions(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Position embeddings for a ``grid_h x grid_w`` token grid (bilinear resize for other input sizes)."""
        if (grid_h, grid_w) == (self.patch_embed.num_y, self.patch_embed.num_x):
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, (self.patch_embed.num_y, self.patch_embed.num_x), (grid_h, grid_w))

    def forward(self, x: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.patch_embed(x)
        grid_h, grid_w = tokens.shape[-2:]
        tokens = tokens.flatten(2).transpose(1, 2)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        tokens = tokens + self._positions(grid_h, grid_w)
        if self.sie_embed is not None and camids is not None:
            if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
                if camids.numel() and (int(camids.min()) < 0 or int(camids.max()) >= self.sie_embed.shape[0]):
                    raise ValueError(f"camids must lie in [0, {self.sie_embed.shape[0]}) (MODEL.HEADS.NUM_CAMERAS), "
                                     f"got min {int(camids.min())} max {int(camids.max())}")
            tokens = tokens + self.sie_coe * self.sie_embed[camids.long()]
        tokens = self.pos_drop(tokens)
        for block in self.blocks:
            tokens = block(tokens)
        cls = self.norm(tokens)[:, 0]
        return cls.reshape(cls.shape[0], -1, 1, 1)


def resize_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resample the grid part of ``(1, 1 + gh*gw, C)`` position embeddings; the CLS slot is kept."""
    cls_pos, grid = pos_embed[:, :1], pos_embed[:, 1:]
    channels = grid.shape[-1]
    grid = grid.reshape(1, old_grid[0], old_grid[1], channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_grid, mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], channels)
    return torch.cat([cls_pos, grid], dim=1)


@dataclass(frozen=True)
class ViTSpec:
    depth: int
    num_heads: int
    mlp_ratio: float
    qkv_bias: bool
    qk_scale: float | None
    embed_dim: int = 768


# FastReID's two sizes ("small" is the original timm ViT-S: 768 wide, 8 deep, no qkv bias)
VIT_SPECS: dict[str, ViTSpec] = {
    "small": ViTSpec(depth=8, num_heads=8, mlp_ratio=3.0, qkv_bias=False, qk_scale=768 ** -0.5),
    "base": ViTSpec(depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True, qk_scale=None),
}


def _pretrained_remap(model: VisionTransformer):
    """Adapt ImageNet ViT weights: drop classifier heads, un-flatten patch kernels, resample positions."""

    def remap(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in state.items():
            if key.startswith(("head", "dist", "fc_norm", "pre_logits")):
                continue
            if key == "patch_embed.proj.weight" and value.dim() < 4:
                value = value.reshape(model.patch_embed.proj.weight.shape)
            elif key == "pos_embed" and value.shape != model.pos_embed.shape:
                side = math.isqrt(value.shape[1] - 1)
                if side * side != value.shape[1] - 1:  # DeiT-distilled: CLS + distillation token + grid
                    side = math.isqrt(value.shape[1] - 2)
                    value = torch.cat([value[:, :1], value[:, 2:]], dim=1)
                value = resize_pos_embed(value, (side, side), (model.patch_embed.num_y, model.patch_embed.num_x))
            out[key] = value
        return out

    return remap


@BACKBONE_REGISTRY.register("build_vit_backbone", aliases=("vit",))
def build_vit_backbone(cfg) -> VisionTransformer:
    """``MODEL.BACKBONE.DEPTH`` small / base; input size ``INPUT.SIZE_TRAIN``; SIE from ``SIE_COE``."""
    bb = cfg.MODEL.BACKBONE
    depth = choose_variant("MODEL.BACKBONE.DEPTH", bb.DEPTH, VIT_SPECS)
    spec = VIT_SPECS[depth]
    num_cameras = int(cfg.MODEL.HEADS.NUM_CAMERAS)
    if bb.SIE_COE > 0 and num_cameras <= 0:
        logger.warning("MODEL.BACKBONE.SIE_COE=%s but MODEL.HEADS.NUM_CAMERAS=0: no camera embedding is built "
                       "(the trainer sets NUM_CAMERAS from the data)", bb.SIE_COE)
    model = VisionTransformer(
        img_size=tuple(cfg.INPUT.SIZE_TRAIN), patch_size=16, stride_size=tuple(bb.STRIDE_SIZE),
        embed_dim=spec.embed_dim, depth=spec.depth, num_heads=spec.num_heads, mlp_ratio=spec.mlp_ratio,
        qkv_bias=spec.qkv_bias, qk_scale=spec.qk_scale, drop_rate=bb.DROP_RATIO, attn_drop_rate=bb.ATT_DROP_RATE,
        drop_path_rate=bb.DROP_PATH_RATIO, num_cameras=num_cameras, sie_coe=bb.SIE_COE)
    load_pretrained_backbone(model, cfg, f"vit_{depth}_patch16_224", remap=_pretrained_remap(model))
    return model
