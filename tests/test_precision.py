"""The precision a training runs in (multimix/precision.py): what `auto` picks on each device,
that a bf16 run really computes in bf16 while its weights, optimiser and losses stay float32,
and that the trainers of every method go through the same calls on CPU as on CUDA."""

from __future__ import annotations

import pytest
import torch

from multimix import precision as precision_module
from multimix.config import load_config
from multimix.errors import InputError
from multimix.methods import method_class
from multimix.precision import Precision, resolve

from test_training import fixed_batch, linked_data, tiny_params, tiny_project  # noqa: F401  (module fixture)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_picks_bf16_only_where_the_device_runs_it_fast(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: ())
    assert resolve("auto", "auto", CPU) == Precision("fp32", "cpu", False, "auto: cpu without fast bf16")
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    chosen = resolve("auto", "auto", CPU)
    assert (chosen.name, chosen.channels_last, chosen.reason) == ("bf16", False, "auto: CPU with avx512_bf16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert (resolve("auto", "auto", CUDA).name, resolve("auto", "auto", CUDA).channels_last) == ("bf16", True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve("auto", "auto", CUDA).name == "fp16"  # an older GPU: fp16 with a loss scaler
    assert resolve("fp32", False, CUDA) == Precision("fp32", "cuda", False)
    assert resolve("bf16", True, CPU) == Precision("bf16", "cpu", True)


def test_fp16_on_a_cpu_is_a_one_line_error():
    with pytest.raises(InputError, match="fp16, which needs a CUDA device"):
        resolve("fp16", "auto", CPU)


def test_the_cpu_flags_are_read_from_cpuinfo():
    flags = precision_module.cpu_bf16_flags()
    assert set(flags) <= set(precision_module.CPU_BF16_FLAGS)
    text = open("/proc/cpuinfo").read()
    assert ("avx512_bf16" in text.split()) == ("avx512_bf16" in flags)


@pytest.mark.parametrize("value", ["bf17", "FP32", 16])
def test_precision_keys_are_type_checked(tmp_path, value):
    with pytest.raises(InputError, match="train.precision"):
        load_config(tiny_params(tmp_path, precision=value))
    with pytest.raises(InputError, match="train.channels_last"):
        load_config(tiny_params(tmp_path, channels_last="yes"))


@pytest.mark.parametrize("preset", ["multimix", "unet", "enc"])
def test_a_bf16_step_computes_in_bf16_and_keeps_float32_weights(tmp_path, tiny_project, preset):
    folder = linked_data(tiny_project, tmp_path)
    tiny_params(folder)
    cfg, spec, batch = fixed_batch(folder, preset)
    chosen = Precision("bf16", "cpu", True)
    batch = {name: dict(part, image=chosen.images(part["image"])) for name, part in batch.items()}
    method = method_class(spec)(cfg, spec, CPU, chosen)
    seen = set()
    convs = [m for m in method.model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.add(out.dtype)) for m in convs]
    before = {k: v.clone() for k, v in method.model.state_dict().items()}
    terms = method.step(batch, torch.Generator().manual_seed(0), 0)
    for h in hooks:
        h.remove()
    assert seen == {torch.bfloat16}, seen  # every convolution ran in bf16
    assert all(p.dtype == torch.float32 for p in method.model.parameters())  # float32 master weights
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in method.model.parameters() if p.dim() == 4)
    assert any(not torch.equal(before[k], v) for k, v in method.model.state_dict().items())  # it stepped
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())


def test_fp32_computes_in_fp32(tmp_path, tiny_project):
    folder = linked_data(tiny_project, tmp_path)
    tiny_params(folder)
    cfg, spec, batch = fixed_batch(folder, "multimix")
    method = method_class(spec)(cfg, spec, CPU, resolve("fp32", "auto", CPU))
    seen = set()
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.add(out.dtype))
             for m in method.model.modules() if isinstance(m, torch.nn.Conv2d)]
    method.step(batch, torch.Generator().manual_seed(0), 0)
    for h in hooks:
        h.remove()
    assert seen == {torch.float32}


def test_memory_modes_resolve_and_low_memory_trains_to_identical_weights(tmp_path, tiny_project):
    """train.memory: low recomputes MultiMix's activations in the backward pass (activation
    checkpointing, dropout draws replayed): the weights after two steps are bit-identical."""
    from multimix.runtime import memory_mode

    assert memory_mode("auto", CPU, 256) == "low" and memory_mode("auto", CPU, 128) == "fast"
    assert memory_mode("auto", CUDA, 512) == "fast" and memory_mode("low", CUDA, 64) == "low"
    folder = linked_data(tiny_project, tmp_path)
    tiny_params(folder)
    cfg, spec, batch = fixed_batch(folder, "multimix")
    weights = {}
    for mode in ("fast", "low"):
        torch.manual_seed(0)
        method = method_class(spec)(cfg, spec, CPU)
        method.model.checkpointing = mode == "low"
        for step in range(2):
            torch.manual_seed(step)
            method.step(batch, torch.Generator().manual_seed(step), 0)
        weights[mode] = method.model.state_dict()
    assert all(torch.equal(weights["fast"][k], weights["low"][k]) for k in weights["fast"])
    # and the checkpointed blocks really drop their activations: fewer tensors saved for backward
    saved = {}
    for mode in ("fast", "low"):
        method = method_class(spec)(cfg, spec, CPU)
        method.model.checkpointing = mode == "low"
        count = [0]

        def pack(t, count=count):
            count[0] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss, _ = __import__("multimix.methods.multimix.training", fromlist=["train_step"]).train_step(
                method.model, batch, spec.variant, cfg, torch.Generator().manual_seed(0), 0)
        saved[mode] = count[0]
    assert saved["low"] < 0.6 * saved["fast"], saved
