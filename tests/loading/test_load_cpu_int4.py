"""qd.load onto the CPU backends: 4-bit GPTQ and AWQ on torch's int4 kernel and the native ones (float32
``cpu-q4``, int8-activation ``cpu-q4-q8dot``), 8-bit GPTQ kept dense.

Oracle: the same checkpoint loaded on the portable backend (float32, exact), and the float model
holding the dequantized weights. The fast path's logits must stay within 5 % of the quantization
error (the portable load's logits vs the unquantized model's), the criterion set against the
producing stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import quantdispatch as qd
from quantdispatch.kernels.int4 import Int4Linear
from quantdispatch.kernels.int4_native import Q4Linear, native_int4
from quantdispatch.kernels.int4_q8dot import Q4Q8Linear, native_q4q8
from quantdispatch.kernels.modules import GptqLinear
from tests.cpu import needs_avx2_fma, needs_vector_int4

from .ckpt import CONFIG, awq_quantizer, base_model, gptq_quantizer, write_quantized

torch.set_num_threads(1)
IDS = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(3))


INT8_ACTIVATIONS_SHARE = 0.2
"""The share of the quantization error allowed to ``cpu-q4-q8dot``, whose activations are rounded to
int8 per 32 columns (llama.cpp's arithmetic): that rounding alone measured 5-7 % of these tiny models'
4-bit quantization error on the logits, against 5 % allowed to the kernels with exact activations."""


def _logits(model: torch.nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(ids).logits.float()
    return out


def _within_quantization_error(fast: torch.Tensor, same: torch.Tensor, exact: torch.Tensor, full: torch.Tensor,
                               share: float = 0.05) -> tuple[float, float]:
    """The fast load's distance from the portable load in the same dtype, and ``share`` (5 %) of the
    quantization error (the exact float32 load vs the unquantized model)."""
    quantization_error = (exact - full).abs().max().item()
    assert quantization_error > 1e-3
    return (fast - same).abs().max().item(), share * quantization_error


CASES = [
    (qd.Gptq(bits=4, group_size=32), False),
    (qd.GptqV2(bits=4, group_size=64, sym=False), False),
    (qd.Gptq(bits=4, group_size=32, desc_act=True, sym=False), True),
    (qd.GptqV2(bits=4, group_size=-1), False),
    (qd.AwqGemm(group_size=32), False),
    (qd.AwqGemv(group_size=64), False),
    (qd.AwqGemvFast(group_size=32), False),
]


KERNELS = [pytest.param("int4", id="aten", marks=needs_vector_int4),
           pytest.param("q4", id="native", marks=[needs_avx2_fma, pytest.mark.skipif(native_int4() is None, reason="no native int4 kernel here")]),
           pytest.param("q4-q8dot", id="q8dot", marks=[needs_avx2_fma, pytest.mark.skipif(native_q4q8() is None,
                                                                                          reason="no int8-activation int4 kernel here")])]
MODULES: dict[str, type[torch.nn.Module]] = {"int4": Int4Linear, "q4": Q4Linear, "q4-q8dot": Q4Q8Linear}


def _backend(kernel: str, gptq: bool) -> str:
    """The backend to force: the old per-method names for the first two kernels (they must keep working), the kernel's own name else."""
    return f"cpu-{kernel}-{'gptq' if gptq else 'awq'}" if kernel in ("int4", "q4") else f"cpu-{kernel}"


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(("config", "act_order"), CASES, ids=lambda c: repr(c)[:36] if not isinstance(c, bool) else str(c))
def test_int4_backends_agree_with_the_portable_one(tmp_path: Path, config: qd.AbstractQuantConfig, act_order: bool, dtype: str,
                                                   kernel: str) -> None:
    """Every 4-bit GPTQ/AWQ variant loads onto the kernel's modules (torch's Int4Linear, the native
    Q4Linear and Q4Q8Linear), and the logits are the portable load's in the same model dtype (float32 or
    bfloat16) within 5 % of the quantization error (20 % with int8 activations), on 24 rows (prefill)
    and on one (decode)."""
    gptq = isinstance(config, qd.AbstractGptq)
    model = base_model()
    quantize = gptq_quantizer(config, act_order) if isinstance(config, qd.AbstractGptq) else awq_quantizer(config)  # type: ignore[arg-type]
    write_quantized(tmp_path, model, config, quantize)
    module = MODULES[kernel]
    fast = qd.load(tmp_path, device="cpu", dtype=dtype, backend=_backend(kernel, gptq)).unwrap()
    portable = "torch-packed" if gptq else "torch-packed"
    exact = qd.load(tmp_path, device="cpu", dtype="float32", backend=portable).unwrap()
    same = qd.load(tmp_path, device="cpu", dtype=dtype, backend=portable).unwrap() if dtype != "float32" else exact
    layers = [m for m in fast.model.modules() if isinstance(m, module)]
    assert len(layers) == 2 * 7 and not any(isinstance(m, GptqLinear) for m in fast.model.modules())
    assert all((m.perm is not None) == act_order for m in layers)
    assert fast.plan.dtype.value == dtype
    share = INT8_ACTIVATIONS_SHARE if kernel == "q4-q8dot" else 0.05
    for ids in (IDS, IDS[:1, :1]):
        exact_logits, same_logits = _logits(exact.model, ids), _logits(same.model, ids)
        worst, allowed = _within_quantization_error(_logits(fast.model, ids), same_logits, exact_logits, _logits(model, ids), share)
        if dtype == "bfloat16":
            # bf16 logits are themselves rounded to 8 significant bits: two ulps at the largest logit
            # (this tiny model's quantization error is only ~10 such ulps).
            allowed = max(allowed, 2 * 2.0 ** (torch.frexp(same_logits.abs().max()).exponent.item() - 8))
        assert worst <= allowed, (ids.shape, worst, allowed)


def test_eight_bit_gptq_is_dense_and_exact_to_its_group_scales(tmp_path: Path) -> None:
    """8-bit GPTQ on cpu-dense: plain nn.Linear layers whose float32 weights are the portable
    module's dequantized weights bit for bit (one rounding, none in float32)."""
    config = qd.GptqV2(bits=8, group_size=32, sym=False)
    write_quantized(tmp_path, base_model(), config, gptq_quantizer(config))
    dense = qd.load(tmp_path, device="cpu", dtype="float32", backend="cpu-dense").unwrap()
    portable = qd.load(tmp_path, device="cpu", dtype="float32", backend="torch-packed").unwrap()
    name = "model.layers.0.mlp.down_proj"
    layer, packed = dense.model.get_submodule(name), portable.model.get_submodule(name)
    assert type(layer) is torch.nn.Linear and isinstance(packed, GptqLinear)
    assert torch.equal(layer.weight, packed.dequantize(torch.float32))
    assert torch.allclose(_logits(dense.model), _logits(portable.model), atol=1e-5, rtol=0)


@needs_vector_int4
def test_layers_the_kernel_cannot_take_stay_portable(tmp_path: Path) -> None:
    """A model whose MLP width is not a multiple of 16 loads: those layers keep the portable module,
    the rest run on the kernel, and the logits still agree with the portable load."""
    import transformers

    odd = transformers.LlamaConfig(**{**CONFIG.to_dict(), "intermediate_size": 264})  # 264 % 16 == 8
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(odd).eval()
    config = qd.Gptq(bits=4, group_size=-1)
    write_quantized(tmp_path, model, config, gptq_quantizer(config))
    fast = qd.load(tmp_path, device="cpu", dtype="float32", backend="cpu-int4").unwrap().model
    exact = qd.load(tmp_path, device="cpu", dtype="float32", backend="torch-packed").unwrap().model
    kinds = {name.rpartition(".")[2]: type(m).__name__ for name, m in fast.named_modules() if name.startswith("model.layers.0.")}
    # gate/up: out_features 264 is not a multiple of 16; down: in_features 264 is not a multiple of 32.
    assert kinds["gate_proj"] == kinds["up_proj"] == kinds["down_proj"] == "GptqLinear" and kinds["q_proj"] == "Int4Linear"
    exact_logits = _logits(exact)
    worst, allowed = _within_quantization_error(_logits(fast), exact_logits, exact_logits, _logits(model))
    assert worst <= allowed


_RSS_SCRIPT = """
import json, sys
import torch
import transformers.models.llama.modeling_llama  # noqa: F401  (the model's modeling code: part of the baseline)
import quantdispatch as qd
torch.set_num_threads(1)
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident set
before = status("VmRSS:")
loaded = qd.load(sys.argv[1], device="cpu", backend=sys.argv[2]).unwrap()
print(json.dumps({"before": before, "after": status("VmHWM:"), "disk": loaded.stats.bytes_on_disk}))
"""


@pytest.mark.parametrize("kernel", KERNELS)
def test_loading_peak_memory_stays_near_the_checkpoint_size(tmp_path: Path, kernel: str) -> None:
    """In a fresh process, loading onto an int4 kernel raises the peak RSS above a process that has
    imported torch and the modeling code by at most 1.2x the checkpoint's size plus the load's
    fixed cost (measured as the portable load's, which reads no packed weight) and one layer's
    repack scratch. The fixed cost itself depends on the machine's allocator and libraries (22 MiB
    here, 26 MiB on the CI box); it is only checked to stay under 40 MiB.
    Linux: the peak is reset through /proc/self/clear_refs just before the load."""
    import transformers

    wide = transformers.LlamaConfig(**{**CONFIG.to_dict(), "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 4,
                                       "num_attention_heads": 8, "num_key_value_heads": 8})
    torch.manual_seed(0)
    config = qd.Gptq(bits=4, group_size=128)
    write_quantized(tmp_path, transformers.LlamaForCausalLM(wide).eval(), config, gptq_quantizer(config))
    def peak(backend: str) -> tuple[int, int]:
        done = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(tmp_path), backend], capture_output=True, text=True,
                              timeout=300, check=True)
        record = json.loads(done.stdout.strip().splitlines()[-1])
        return record["after"] - record["before"], record["disk"]

    fixed, disk = peak("torch-packed")  # reads no packed weight: the load's own cost (code, skeleton, embeddings)
    grown, _ = peak(_backend(kernel, True))
    assert disk > 20 * 2**20 and fixed <= 40 * 2**20, (fixed, disk)
    # One layer is repacked at a time: its scratch (uint8 codes, an int32 block of them: 5 bytes a
    # weight) is the only transient. It is 13 % of this small model (largest layer 2816 x 1024);
    # in a 63 MB, 12-layer checkpoint the whole growth minus the fixed cost was 1.03-1.14x.
    scratch = 5 * 2816 * 1024
    assert grown <= 1.2 * disk + fixed + scratch, (grown, fixed, disk)
