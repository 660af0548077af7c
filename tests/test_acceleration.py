"""Speed options change speed, not results: channels_last, torch.compile, native-bf16 detection."""
from __future__ import annotations

import logging

import pytest
import torch

from omnireid.config import ConfigError, get_cfg
from omnireid.modeling import build_model
from omnireid.modeling.acceleration import accelerate, channels_last_enabled, compile_model
from omnireid.utils import hardware

CPU = torch.device("cpu")


def tiny_cfg(*opts: str):
    return get_cfg().merge_from_list([
        "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False",
        "MODEL.HEADS.NUM_CLASSES", "5", "MODEL.HEADS.WITH_BNNECK", "True", "MODEL.DEVICE", "cpu",
        "MODEL.LOSSES.NAME", "['CrossEntropyLoss', 'TripletLoss']", *opts])


def batch(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {"images": torch.randint(0, 256, (8, 3, 64, 32), generator=gen).float(),
            "targets": torch.arange(8) // 2, "camids": torch.zeros(8, dtype=torch.long)}


def twin_models(cfg_a, cfg_b):
    torch.manual_seed(0)
    a = build_model(cfg_a)
    b = build_model(cfg_b)
    b.load_state_dict(a.state_dict())
    return accelerate(cfg_a, a, CPU), accelerate(cfg_b, b, CPU)


def features(model, data):
    out = model.eval()(data)
    return out["features"] if isinstance(out, dict) else out


def test_channels_last_auto_resolution():
    model = build_model(tiny_cfg("MODEL.CHANNELS_LAST", "auto"))
    assert channels_last_enabled(tiny_cfg("MODEL.CHANNELS_LAST", "auto"), model, CPU)
    assert not channels_last_enabled(tiny_cfg("MODEL.CHANNELS_LAST", "auto"), model, torch.device("cuda"))  # fp32 on CUDA: off
    assert channels_last_enabled(tiny_cfg("MODEL.CHANNELS_LAST", "auto", "SOLVER.AMP.ENABLED", "True"), model, torch.device("cuda"))
    assert not channels_last_enabled(tiny_cfg("MODEL.CHANNELS_LAST", "false"), model, CPU)
    assert not channels_last_enabled(tiny_cfg("MODEL.CHANNELS_LAST", "auto"), torch.nn.Linear(3, 3), CPU)  # nothing to convert
    with pytest.raises(ConfigError, match="CHANNELS_LAST"):
        channels_last_enabled(tiny_cfg("MODEL.CHANNELS_LAST", "sometimes"), model, CPU)


def test_channels_last_gives_the_same_training_step_and_features():
    nhwc, nchw = twin_models(tiny_cfg("MODEL.CHANNELS_LAST", "true"), tiny_cfg("MODEL.CHANNELS_LAST", "false"))
    conv = nhwc.backbone.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert nchw.backbone.conv1.weight.is_contiguous()
    seen = []
    nhwc.backbone.layer1[0].register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    assert nhwc.state_dict().keys() == nchw.state_dict().keys()
    for model in (nhwc, nchw):
        model.train()
        sum(model(batch()).values()).backward()
    assert seen == [True]
    for (name, p), q in zip(nhwc.named_parameters(), nchw.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is None:  # unused in training (e.g. a margin-free eval-only layer)
            continue
        # Summation order differs between NHWC and NCHW kernels: compare relative to the gradient's size.
        assert (p.grad - q.grad).norm() <= 1e-2 * q.grad.norm() + 1e-6, name
    with torch.inference_mode():
        torch.testing.assert_close(features(nhwc, batch(1)), features(nchw, batch(1)), rtol=1e-4, atol=1e-4)


def test_compile_keeps_state_dict_keys_and_outputs():
    eager_cfg = tiny_cfg()
    compiled_cfg = tiny_cfg("MODEL.COMPILE.ENABLED", "True", "MODEL.COMPILE.BACKEND", "aot_eager")
    compiled, eager = twin_models(compiled_cfg, eager_cfg)
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    assert compiled._compiled_call_impl is not None
    with torch.no_grad():
        torch.testing.assert_close(features(compiled, batch()), features(eager, batch()), rtol=1e-4, atol=1e-4)


def test_unavailable_compile_backend_falls_back_with_one_warning(caplog):
    cfg = tiny_cfg("MODEL.COMPILE.ENABLED", "True", "MODEL.COMPILE.BACKEND", "no_such_backend")
    model = build_model(cfg)
    with caplog.at_level(logging.WARNING):
        assert compile_model(cfg, model, CPU) is False
    assert model._compiled_call_impl is None
    assert [r.getMessage() for r in caplog.records] == [
        "MODEL.COMPILE: torch.compile backend 'no_such_backend' is not available; running the model eagerly"]


def test_native_bf16_detection_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert hardware.cpu_has_native_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert hardware.cpu_has_native_bf16() is True



def test_cpu_amp_auto_uses_bf16_only_where_native(monkeypatch, caplog):
    from omnireid.engine import trainer

    cfg = tiny_cfg("SOLVER.AMP.ENABLED", "True")
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    assert trainer._autocast_dtype(cfg, CPU) is torch.bfloat16
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert trainer._autocast_dtype(cfg, CPU) is None
    assert "no native bf16" in caplog.text
    forced = tiny_cfg("SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "bf16")
    assert trainer._autocast_dtype(forced, CPU) is torch.bfloat16

