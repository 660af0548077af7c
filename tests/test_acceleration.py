"""Speed options change speed, not results: channels_last, torch.compile, native-bf16 detection, the
CPU bf16 convolution guard."""
from __future__ import annotations

import contextlib
import logging

import pytest
import torch

from omnireid.config import ConfigError, get_cfg
from omnireid.modeling import build_model
from omnireid.modeling.acceleration import (OneDnnBf16ConvGuard, accelerate, channels_last_enabled, compile_model,
                                            mixed_precision)
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
    fp32 = tiny_cfg("MODEL.CHANNELS_LAST", "auto", "SOLVER.AMP.ENABLED", "False")
    assert not channels_last_enabled(fp32, model, torch.device("cuda"))  # fp32 on CUDA: off
    assert channels_last_enabled(tiny_cfg(), model, torch.device("cuda"))  # the defaults: auto, with AMP
    assert channels_last_enabled(tiny_cfg(), model, CPU)
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



def test_cpu_amp_auto_is_bf16_only_where_the_cpu_has_it(monkeypatch, caplog):
    from omnireid.engine import trainer

    cfg = tiny_cfg()  # the default: SOLVER.AMP.ENABLED True, DTYPE auto
    assert cfg.SOLVER.AMP.ENABLED is True and cfg.SOLVER.AMP.DTYPE == "auto"
    assert trainer.autocast_dtype(cfg, torch.device("cuda")) is torch.float16
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    assert trainer.autocast_dtype(cfg, CPU) is torch.bfloat16
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.INFO):
        assert trainer.autocast_dtype(cfg, CPU) is None
    assert "no native bf16" in caplog.text
    forced = tiny_cfg("SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "bf16")
    assert trainer.autocast_dtype(forced, CPU) is torch.bfloat16
    assert trainer.autocast_dtype(tiny_cfg("SOLVER.AMP.ENABLED", "False"), CPU) is None


@pytest.mark.parametrize("stride,padding,dilation,kernel", [
    (2, 1, 1, 3), (2, 0, 1, 3), (3, 1, 1, 3), ((1, 2), (0, 1), 1, 3), (2, 3, 1, 7), (2, 2, 2, 3), (1, "valid", 1, 3),
    (1, "same", 1, 3)])
@pytest.mark.parametrize("width", [1, 2, 3, 5, 8])
def test_guard_reads_the_output_width_as_conv2d_computes_it(stride, padding, dilation, kernel, width):
    """The guard's width arithmetic against the shapes conv2d itself produces (None only for "same")."""
    from omnireid.modeling.acceleration import _conv2d_output_width

    images, weight = torch.zeros(1, 2, 9, width), torch.zeros(4, 2, kernel, kernel)
    call = {"input": images, "weight": weight, "stride": stride, "padding": padding, "dilation": dilation}
    try:
        expected = torch.nn.functional.conv2d(images, weight, None, stride, padding, dilation).shape[-1]
    except RuntimeError:  # kernel larger than the padded input
        return
    assert _conv2d_output_width(call) == (None if padding == "same" else expected)


def strided_one_column_conv(seed: int) -> tuple[torch.nn.Conv2d, torch.Tensor]:
    """The case oneDNN 3.12's AMX bf16 kernel gets wrong: a stride-2 3x3 conv from 2 columns to 1."""
    gen = torch.Generator().manual_seed(seed)
    conv = torch.nn.Conv2d(128, 256, 3, stride=2, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.03)
    return conv, torch.randn(32, 128, 4, 2, generator=gen)


@pytest.mark.parametrize("seed", range(4))
def test_cpu_bf16_autocast_convolutions_match_fp32(seed):
    """Under the trainer's CPU bf16 context, output and weight gradient of a strided conv with one output
    column match fp32 to bf16 rounding. (Plain ``torch.autocast`` gave NaN or values off by 150% on
    this AMX machine in most draws; on other CPUs this holds either way.)"""
    conv, images = strided_one_column_conv(seed)
    with mixed_precision("cpu", torch.bfloat16):
        out = conv(images)
    out.float().square().sum().backward()
    grad = conv.weight.grad.clone()
    conv.weight.grad = None
    reference = torch.nn.functional.conv2d(images.bfloat16().float(), conv.weight.bfloat16().float(), conv.bias,
                                           2, 1)
    reference.square().sum().backward()
    assert out.dtype is torch.bfloat16  # the layers after it see what autocast would give them
    torch.testing.assert_close(out.float(), reference.detach(), rtol=0.02, atol=0.02 * reference.abs().max().item())
    torch.testing.assert_close(grad, conv.weight.grad, rtol=0.05, atol=0.05 * conv.weight.grad.abs().max().item())


def test_guard_leaves_other_convolutions_in_bf16():
    """Only strided one-column convolutions move to fp32; the guard is in the trainer's context only for
    CPU bf16."""
    seen = []

    class Spy(OneDnnBf16ConvGuard):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = super().__torch_function__(func, types, args, kwargs)
            if func is torch.conv2d:
                seen.append(out.dtype)
            return out

    conv = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16), Spy():
        conv(torch.randn(2, 8, 6, 6))  # 3 output columns: bf16 as usual
    assert seen == [torch.bfloat16]
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        plain = conv(torch.randn(2, 8, 6, 2))
    assert plain.dtype is torch.bfloat16
    assert isinstance(mixed_precision("cpu", None), contextlib.nullcontext)
    with mixed_precision("cpu", torch.bfloat16):
        assert isinstance(torch.overrides._get_current_function_mode(), OneDnnBf16ConvGuard)


@pytest.mark.skipif(not hardware.cpu_has_native_bf16(), reason="this CPU has no native bf16 (AVX512-BF16/AMX): "
                    "bf16 autocast is emulated (slow) here")
def test_bf16_training_step_runs_in_bf16_and_learns():
    """SOLVER.AMP.DTYPE bf16 on a native-bf16 CPU, with channels_last: the loss is finite and falls."""
    from omnireid.engine.trainer import autocast_dtype
    from omnireid.solver import build_optimizer

    cfg = tiny_cfg("SOLVER.OPT", "Adam", "SOLVER.BASE_LR", "0.001", "SOLVER.AMP.DTYPE", "bf16")
    dtype = autocast_dtype(cfg, CPU)
    assert dtype is torch.bfloat16
    torch.manual_seed(0)
    model = accelerate(cfg, build_model(cfg), CPU).train()
    assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    seen = []
    model.backbone.layer1[0].register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    losses = []
    for _ in range(6):
        with torch.autocast("cpu", dtype=dtype):
            total = sum(model(batch()).values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert seen[0] is torch.bfloat16 and all(p.dtype is torch.float32 for p in model.parameters())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.8 * losses[0], losses


def test_export_of_a_channels_last_model_gives_the_same_graph_outputs(tmp_path):
    """Export copies the model into its own eager, contiguous form: a model trained with
    channels_last exports to the same ONNX outputs as its NCHW twin, and passes parity."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from export_models import INPUT_SIZE, build_eval_model, parity_batch

    from omnireid.export import ExportOptions, export_model
    from omnireid.modeling.acceleration import to_channels_last

    nchw, cfg = build_eval_model("bot_r18")
    nhwc, _ = build_eval_model("bot_r18")
    to_channels_last(nhwc)
    assert nhwc.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images, source = parity_batch(cfg, count=3)
    outputs = []
    for name, model in (("nchw", nchw), ("nhwc", nhwc)):
        report = export_model(model, "onnx", str(tmp_path / name), ExportOptions(input_size=INPUT_SIZE), images,
                              source, latency_runs=1)
        assert report["parity"]["passed"], report["parity"]
        session = ort.InferenceSession(str(tmp_path / name / "model.onnx"), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {"images": images.float().numpy()})[0])
    assert nhwc.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)  # caller's model untouched
    torch.testing.assert_close(torch.from_numpy(outputs[1]), torch.from_numpy(outputs[0]), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        eager = nchw(images.float())["features"]
    torch.testing.assert_close(torch.from_numpy(outputs[1]), eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_exact_resume_with_compile_on(backend, synthetic_root, tmp_path, make_tiny_cfg):
    """MODEL.COMPILE keeps state-dict keys and recompiles on resume: interrupted + resumed equals uninterrupted."""
    from test_engine import assert_resume_is_exact

    opts = ["MODEL.COMPILE.ENABLED", "True", "MODEL.COMPILE.BACKEND", backend, "TEST.EVAL_PERIOD", "0"]
    state = assert_resume_is_exact(make_tiny_cfg, synthetic_root, tmp_path, opts)
    assert not any("_orig_mod" in key for key in state)  # checkpoints keep the eager names
