"""What other engines do with a checkpoint on one device: Transformers, vLLM, llama.cpp.

Pure: a typed config and a device in, an ``EngineAnswer`` out. Every rule below is a fact read
from the engine's source or documentation, with the file it was read in (``source``); where the
facts do not settle a case, the answer says ``unverified`` rather than guessing.

Transformers facts are from the installed Transformers 5.24
(``transformers/quantizers/quantizer_*.py``, ``quantizers/auto.py``); vLLM's CPU facts from
``shared/research/anchors-2026-12.md`` (vLLM's quantization docs: on x86 CPUs AWQ, GPTQ and
llm-compressor INT8 W8A8, no FP8 W8A8, no GGUF, no bitsandbytes); vLLM's CUDA facts are
``quantdispatch.engine``'s.
"""

from __future__ import annotations

from typing import Final, Literal

import attrs

from .backend import Refusal
from .configs.awq import AbstractAwq
from .configs.base import AbstractQuantConfig
from .configs.compressed_tensors import CompressedTensors, CtScheme
from .configs.fp8 import FbgemmFp8, Fp8
from .configs.gguf import Gguf
from .configs.gptq import AbstractGptq
from .configs.modelopt import AbstractModelopt, ModeloptFp8, ModeloptMixed, ModeloptNvfp4
from .engine import vllm_args
from .environment import Cpu, Cuda

__all__ = ["Status", "FormatKind", "EngineAnswer", "TransformersArgs", "format_kind", "device_name", "transformers_answer", "transformers_args",
           "vllm_answer", "llama_cpp_answer", "TRANSFORMERS_SOURCE", "VLLM_CPU_SOURCE"]

Status = Literal["runs", "dequantizes", "refuses", "unverified"]
"""``runs``: the weights stay quantized and the engine's kernels run them; ``dequantizes``: it
loads, with the weights expanded to a float dtype at load; ``refuses``: it raises or cannot read
the weights; ``unverified``: the facts read do not settle it."""

FormatKind = Literal["fp8", "nvfp4", "int8-w8a8", "int8-w8a16", "int4-w4a16", "other"]

TRANSFORMERS_SOURCE: Final = "transformers 5.24 transformers/quantizers/"
VLLM_CPU_SOURCE: Final = "docs.vllm.ai/quantization (shared/research/anchors-2026-12.md, Q1)"

_TF_FP8: Final = TRANSFORMERS_SOURCE + "quantizer_finegrained_fp8.py (validate_environment)"
_TF_FBGEMM: Final = TRANSFORMERS_SOURCE + "quantizer_fbgemm_fp8.py (validate_environment)"
_TF_CT: Final = TRANSFORMERS_SOURCE + "quantizer_compressed_tensors.py (validate_environment, _process_model_before_weight_loading)"
_TF_AUTO: Final = TRANSFORMERS_SOURCE + "auto.py (AUTO_QUANTIZER_MAPPING, supports_quant_method)"


@attrs.frozen(kw_only=True)
class EngineAnswer:
    """One engine's answer for a checkpoint on one device.

    Attributes:
        engine: ``quantdispatch``, ``transformers``, ``vllm`` or ``llama.cpp``.
        device: The device's label (``CPU``, ``Hopper (H100)``).
        status: See ``Status``.
        how: What runs it (a backend, a kernel path, a method string), when it loads.
        reason: Why it cannot, or what to know (the engine's own message where it has one).
        source: Where the fact was read.
    """

    engine: Literal["quantdispatch", "transformers", "vllm", "llama.cpp"]
    device: str
    status: Status
    how: str = ""
    reason: str = ""
    source: str = ""


def device_name(device: Cpu | Cuda) -> str:
    """``CPU``, or the GPU's name with its compute capability: ``Hopper (H100) sm_90``."""
    if isinstance(device, Cpu):
        return "CPU"
    return f"{device.name or 'CUDA'} sm_{device.capability[0]}{device.capability[1]}"


_PRESET_KINDS: Final[dict[str, FormatKind]] = {"W8A8": "int8-w8a8", "INT8": "int8-w8a8", "W8A16": "int8-w8a16", "W4A16": "int4-w4a16"}


def _preset_kind(name: str) -> FormatKind:
    upper = name.upper()
    if upper.startswith("FP8"):
        return "fp8"
    if upper.startswith("NVFP4"):
        return "nvfp4"
    return _PRESET_KINDS.get(upper, "other")


def _scheme_kind(s: CtScheme, fmt: str) -> FormatKind:
    w, a = s.weights, s.input_activations
    if w is None:
        return "other"
    if w.type == "float" and w.num_bits == 8:
        return "fp8"
    if w.type == "float" and w.num_bits == 4 and (fmt == "nvfp4-pack-quantized" or s.format == "nvfp4-pack-quantized" or w.group_size == 16):
        return "nvfp4"
    if w.type == "int" and w.num_bits == 8:
        return "int8-w8a8" if a is not None and a.type == "int" and a.num_bits == 8 else "int8-w8a16"
    if w.type == "int" and w.num_bits == 4 and a is None:
        return "int4-w4a16"
    return "other"


def format_kind(config: AbstractQuantConfig) -> FormatKind:
    """The weight format family a config stores, as the engines' support tables group them.

    >>> format_kind(Fp8()), format_kind(ModeloptNvfp4())
    ('fp8', 'nvfp4')
    """
    if isinstance(config, (Fp8, FbgemmFp8, ModeloptFp8)):
        return "fp8"
    if isinstance(config, ModeloptNvfp4):
        return "nvfp4"
    if isinstance(config, ModeloptMixed):
        algos = config.algorithms()
        return "nvfp4" if algos and all("NVFP4" in a for a in algos) else "other"
    if isinstance(config, CompressedTensors):
        kinds = {_scheme_kind(g, config.format) if isinstance(g, CtScheme) else _preset_kind(n)
                 for n, g in config.config_groups or ()}
        return kinds.pop() if len(kinds) == 1 else "other"
    return "other"


def transformers_answer(config: AbstractQuantConfig, device: Cpu | Cuda) -> EngineAnswer:
    """What Transformers' ``from_pretrained`` does with the checkpoint on ``device``."""
    label, cap = device_name(device), (device.capability if isinstance(device, Cuda) else None)

    def say(status: Status, how: str, reason: str, source: str) -> EngineAnswer:
        return EngineAnswer(engine="transformers", device=label, status=status, how=how, reason=reason, source=source)

    if isinstance(config, Fp8):
        if config.dequantize:
            return say("dequantizes", "FP8 weights dequantized to bf16 at load", "the config sets dequantize", _TF_FP8)
        if cap is None:
            return say("dequantizes", "FP8 weights dequantized to bf16 at load", "'Using FP8 quantized models requires a GPU or "
                       "XPU, we will default to dequantizing the model to bf16 since no GPU or XPU is available'", _TF_FP8)
        if cap < (8, 9):
            return say("dequantizes", "FP8 weights dequantized to bf16 at load", "'FP8 quantized models is only supported on GPUs "
                       f"with compute capability >= 8.9', actual {cap[0]}.{cap[1]}", _TF_FP8)
        return say("runs", "FineGrainedFP8 kernels (FP8 weights kept)", "needs accelerate", _TF_FP8)
    if isinstance(config, FbgemmFp8):
        if cap is None:
            return say("refuses", "", "ImportError: 'Using fbgemm fp8 quantization requires a GPU or XPU'", _TF_FBGEMM)
        if cap < (9, 0):
            return say("refuses", "", "ValueError: 'FP8 quantized models is only supported on GPUs with compute capability >= 9.0 "
                       f"(e.g H100)', actual {cap[0]}.{cap[1]}", _TF_FBGEMM)
        return say("runs", "fbgemm-gpu FP8 kernels", "needs fbgemm-gpu and accelerate", _TF_FBGEMM)
    if isinstance(config, AbstractModelopt):
        return say("refuses", "", "Transformers has no ModelOpt quantizer: 'modelopt' is not in AUTO_QUANTIZER_MAPPING, so "
                   "supports_quant_method warns 'Unknown quantization type ... we will skip the quantization' (and an "
                   "hf_quant_config.json beside a plain config.json is not read): the packed weights' scales are never applied", _TF_AUTO)
    if isinstance(config, CompressedTensors):
        status, how, reason = _ct_answer(config, cap)
        return say(status, how, reason, _TF_CT)
    return say("unverified", "", f"not among the formats whose Transformers rules were read ({type(config).__name__})", TRANSFORMERS_SOURCE)


def _ct_answer(config: CompressedTensors, cap: tuple[int, int] | None) -> tuple[Status, str, str]:
    if config.effective_dequantize:
        return "dequantizes", "compressed-tensors decompresses to dense weights at load", "the config sets dequantize (or run_compressed: false)"
    kernels = format_kind(config) == "fp8" and config.use_optimized_inference and cap is not None and cap >= (8, 9)
    how = ("compressed-tensors FP8 linear kernels (use_optimized_inference)" if kernels else
           "compressed-tensors' own modules: apply_quantization_config(run_compressed=False); packed formats through compress_model")
    note = "needs compressed-tensors>=0.15"
    if format_kind(config) == "fp8" and not kernels:
        note += "; FP8 matmul kernels only with use_optimized_inference on CUDA sm>=8.9, an XPU or MPS (torch>=2.15)"
    return "runs", how, note


@attrs.frozen(kw_only=True)
class TransformersArgs:
    """``AutoModelForCausalLM.from_pretrained`` keyword arguments for a checkpoint on a device.

    Attributes:
        device_map: ``"cpu"`` or ``"cuda"``.
        dtype: The ``dtype`` to pass.
        quantization_config: Loading attributes to pass in a ``quantization_config`` of the
            checkpoint's method (``{"dequantize": true}`` where Transformers would set it itself).
        notes: What happens on that device.
    """

    device_map: str
    dtype: str
    quantization_config: tuple[tuple[str, bool], ...] = ()
    notes: tuple[str, ...] = ()

    def as_kwargs(self) -> dict[str, object]:
        """The keyword arguments as JSON-ready values."""
        out: dict[str, object] = {"device_map": self.device_map, "dtype": self.dtype}
        if self.quantization_config:
            out["quantization_config"] = dict(self.quantization_config)
        return out


def transformers_args(config: AbstractQuantConfig, device: Cpu | Cuda) -> TransformersArgs | Refusal:
    """Transformers' ``from_pretrained`` arguments for the checkpoint on ``device``, or why it refuses."""
    said = transformers_answer(config, device)
    where = "cpu" if isinstance(device, Cpu) else "cuda"
    if said.status in ("refuses", "unverified"):
        return Refusal(f"engine.transformers.{said.status}", said.reason, "load it with quantdispatch, or serve it with vLLM on a GPU")
    notes = (said.how, said.reason, f"from {said.source}")
    # FbgemmFp8Quantizer.update_dtype overwrites any other dtype with bfloat16; the others compute in bf16 too.
    dequantize = isinstance(config, Fp8) and said.status == "dequantizes" and not config.dequantize
    return TransformersArgs(device_map=where, dtype="bfloat16", quantization_config=(("dequantize", True),) if dequantize else (),
                            notes=notes)


_NO_FP4_MMA: Final = ("no FP4 tensor cores below sm_100: 'NVFP4 requires Blackwell (sm100+) block-scaled tensor cores' "
                      "(transformers quantizer_nvfp4.py); vLLM's modelopt_fp4 floor is 7.5 (quantdispatch.engine)")
_VLLM_CPU_NO_FP8: Final = "vLLM's x86 CPU backend has no FP8 W8A8 (its quantization docs' hardware table)"


def vllm_answer(config: AbstractQuantConfig, device: Cpu | Cuda) -> EngineAnswer:
    """vLLM's answer on ``device``: its CUDA rules (``vllm_args``), or its x86 CPU support table."""
    if isinstance(device, Cuda):
        made = vllm_args(config, device, allow_deprecated=True)
        if isinstance(made, Refusal):
            return EngineAnswer(engine="vllm", device=device_name(device), status="refuses", reason=made.message, source="quantdispatch.engine")
        notes = made.notes + ((_NO_FP4_MMA,) if format_kind(config) == "nvfp4" and device.capability < (10, 0) else ())
        return EngineAnswer(engine="vllm", device=device_name(device), status="runs", how=" ".join(made.as_cli()),
                            reason="; ".join(notes), source="quantdispatch.engine")
    kind = format_kind(config)

    def say(status: Status, how: str, reason: str) -> EngineAnswer:
        return EngineAnswer(engine="vllm", device="CPU", status=status, how=how, reason=reason, source=VLLM_CPU_SOURCE)

    if kind == "fp8":
        return say("refuses", "", _VLLM_CPU_NO_FP8)
    if kind == "int8-w8a8" and isinstance(config, CompressedTensors):
        return say("runs", "--quantization compressed-tensors --device cpu", "llm-compressor INT8 W8A8 is in vLLM's x86 CPU list")
    if isinstance(config, (AbstractGptq, AbstractAwq)):
        return say("runs", "", "AWQ and GPTQ are in vLLM's x86 CPU list")
    if isinstance(config, Gguf):
        return say("refuses", "", "vLLM's x86 CPU backend has no GGUF")
    return say("unverified", "", f"not in vLLM's x86 CPU list (AWQ, GPTQ, INT8 W8A8); {kind} on its CPU backend was not read")


def llama_cpp_answer(config: AbstractQuantConfig, device: Cpu | Cuda) -> EngineAnswer:
    """llama.cpp reads GGUF files only (shared/research/peers.md §4): anything else is converted first."""
    label = device_name(device)
    if isinstance(config, Gguf):
        return EngineAnswer(engine="llama.cpp", device=label, status="runs", how="llama-cli -m FILE.gguf", source="research/peers.md §4")
    return EngineAnswer(engine="llama.cpp", device=label, status="refuses", reason="llama.cpp reads GGUF files only: convert the "
                        "checkpoint to GGUF first (convert_hf_to_gguf.py)", source="research/peers.md §4")

