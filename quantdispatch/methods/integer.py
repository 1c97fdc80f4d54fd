"""Library-specific integer methods and MLX: backends (as data) and rules.

Each backend is the package Transformers' quantizer imports (``validate_environment``), with the
devices its kernels run on: EETQ, VPTQ-like CUDA-only libraries; Metal and MLX on Apple GPUs
(MPS) only; HQQ, Quanto, SINQ, AutoRound and BitNet's unpacking also on the CPU. AutoRound's
integer exports are GPTQ or AWQ bytes (``layouts/auto_round.py``): the kernels serving that layout
load them, and the auto-round package takes what no layout holds.
"""

from __future__ import annotations

from typing import Final

from ..backend import Backend, Candidate, DeviceKind, Refusal, Requirement
from ..codec.spec import child_path
from ..configs.integer import AbstractAutoRound, AutoRoundAwq, BitNet, Eetq, Gemma, Hqq, Metal, Quanto, Sinq, auto_round_packing
from ..configs.mlx import MLX_BITS, MLX_GROUPS, MLX_MODES, Mlx
from ..dtypes import DType
from ..environment import AbstractDevice, Mps
from ..jsonvalue import JsonObject
from ..kernel import TORCH_PACKED, kernel_candidates
from ..layouts.auto_round import auto_round_layout
from ..result import Issue, Issues
from ..rules import Selection, compute_dtype, cross_field_issues, declare_backend, quantizes_on_load, select_backend, skip_modules
from ..text import quote
from ._common import ACCELERATE, TORCH, gpu_or_cpu_dtype

__all__ = ["HQQ", "QUANTO", "EETQ", "SINQ", "METAL", "METAL_DEQUANTIZE", "GEMMA", "BITNET", "AUTO_ROUND", "MLX"]

_ALL: Final[tuple[DeviceKind, ...]] = ("cpu", "cuda", "mps")
HQQ = declare_backend(Backend(name="hqq", summary="HQQ's dequantize-and-matmul (torch, or its TorchAO/BitBlas kernels)",
                              requires=(TORCH, Requirement("hqq", "0.2.1")), devices=("cpu", "cuda")))
QUANTO = declare_backend(Backend(name="optimum-quanto", summary="optimum-quanto's QLinear",
                                 requires=(TORCH, ACCELERATE, Requirement("optimum-quanto")), devices=_ALL))
EETQ = declare_backend(Backend(name="eetq", summary="EETQ's int8 weight-only CUDA GEMM (from the kernels hub)",
                               requires=(TORCH, ACCELERATE, Requirement("kernels")), devices=("cuda",), min_capability=(7, 0),
                               dtypes=(DType.FLOAT16, DType.BFLOAT16)))
SINQ = declare_backend(Backend(name="sinq", summary="the sinq package's dequantize-and-matmul", requires=(TORCH, Requirement("sinq")),
                               devices=("cpu", "cuda")))
METAL = declare_backend(Backend(name="metal-kernels", summary="affine int2/4/8 Metal kernels (kernels hub)",
                                requires=(TORCH, Requirement("kernels")), devices=("mps",), dtypes=(DType.FLOAT16, DType.BFLOAT16)))
METAL_DEQUANTIZE = declare_backend(Backend(name="metal-dequantize", summary="dequantize Metal-format weights at load",
                                           requires=(TORCH,), devices=_ALL))
GEMMA = declare_backend(Backend(name="gemma-torch", summary="Transformers' Gemma QAT linear layers (torch only)", requires=(TORCH,), devices=_ALL))
BITNET = declare_backend(Backend(name="bitnet-torch", summary="ternary weights unpacked in torch (BitLinear)", requires=(TORCH, ACCELERATE),
                                 devices=_ALL))
AUTO_ROUND = declare_backend(Backend(name="auto-round", summary="auto-round's kernels (GPTQ/AWQ packings; CPU via IPEX or torch)",
                                     requires=(TORCH, Requirement("auto-round", "0.5")), devices=_ALL))
MLX = declare_backend(Backend(name="mlx", summary="MLX's quantized matmul (Apple silicon)", requires=(Requirement("mlx"),), devices=("mps",),
                              dtypes=(DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32)))


@select_backend.register(Hqq, AbstractDevice)
def _hqq(config: Hqq, device: AbstractDevice, /) -> Selection:
    return (Candidate(HQQ),)


@select_backend.register(Quanto, AbstractDevice)
def _quanto(config: Quanto, device: AbstractDevice, /) -> Selection:
    if config.activations is not None:
        return Refusal("quanto.activations.unsupported", f"quantized activations ({config.activations}) cannot be loaded",
                       "Transformers loads Quanto weights only: set activations to null, or use optimum-quanto directly")
    return (Candidate(QUANTO),)


@select_backend.register(Eetq, AbstractDevice)
def _eetq(config: Eetq, device: AbstractDevice, /) -> Selection:
    return (Candidate(EETQ),)


@select_backend.register(Sinq, AbstractDevice)
def _sinq(config: Sinq, device: AbstractDevice, /) -> Selection:
    if config.sinq_method == "asinq":
        return Refusal("sinq.method.unsupported", "A-SINQ (calibrated SINQ) checkpoints cannot be loaded by Transformers",
                       "load it with the sinq package")
    return (Candidate(SINQ),)


@select_backend.register(Metal, AbstractDevice)
def _metal(config: Metal, device: AbstractDevice, /) -> Selection:
    return (Candidate(METAL, ("dequantize is set",) if config.dequantize else ()), Candidate(METAL_DEQUANTIZE))


@select_backend.register(Gemma, AbstractDevice)
def _gemma(config: Gemma, device: AbstractDevice, /) -> Selection:
    return (Candidate(GEMMA),)


@select_backend.register(BitNet, AbstractDevice)
def _bitnet(config: BitNet, device: AbstractDevice, /) -> Selection:
    return (Candidate(BITNET),)


@select_backend.register(AbstractAutoRound, AbstractDevice)
def _auto_round(config: AbstractAutoRound, device: AbstractDevice, /) -> Selection:
    # AutoRound's integer exports are GPTQ or AWQ bytes (layouts/auto_round.py): the kernels serving
    # that layout first, the auto-round package after them and for every export that is no layout.
    layout = auto_round_layout(config)
    if isinstance(layout, str):
        return (Candidate(TORCH_PACKED.backend, (layout,)), Candidate(AUTO_ROUND))
    return (*kernel_candidates(layout, device), Candidate(AUTO_ROUND))


@select_backend.register(Mlx, AbstractDevice)
def _mlx(config: Mlx, device: AbstractDevice, /) -> Selection:
    return (Candidate(MLX),)


@compute_dtype.register(Mlx, AbstractDevice)
def _mlx_dtype(config: Mlx, device: AbstractDevice, /) -> tuple[DType, str]:
    return (DType.FLOAT16, "MLX models compute in float16") if isinstance(device, Mps) else (DType.FLOAT32, "float32 off Apple GPUs")


@compute_dtype.register(Metal, AbstractDevice)
def _metal_dtype(config: Metal, device: AbstractDevice, /) -> tuple[DType, str]:
    return gpu_or_cpu_dtype(device)


@compute_dtype.register(AbstractAutoRound, AbstractDevice)
def _auto_round_dtype(config: AbstractAutoRound, device: AbstractDevice, /) -> tuple[DType, str]:
    return gpu_or_cpu_dtype(device, config.bits)  # as GPTQ and AWQ, whose layouts these are


@compute_dtype.register(Eetq, AbstractDevice)
def _eetq_dtype(config: Eetq, device: AbstractDevice, /) -> tuple[DType, str]:
    return gpu_or_cpu_dtype(device)


@skip_modules.register(Hqq)
def _hqq_skips(config: Hqq, /) -> tuple[str, ...] | None:
    return config.skip_modules


@skip_modules.register(Quanto)
def _quanto_skips(config: Quanto, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert


@skip_modules.register(Eetq)
def _eetq_skips(config: Eetq, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert


@skip_modules.register(Sinq)
def _sinq_skips(config: Sinq, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert


@skip_modules.register(Metal)
def _metal_skips(config: Metal, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert


@skip_modules.register(Gemma)
def _gemma_skips(config: Gemma, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert


@skip_modules.register(BitNet)
def _bitnet_skips(config: BitNet, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert


# Transformers' quantizers with requires_calibration False quantize full-precision weights while loading.
@quantizes_on_load.register(Hqq)
def _hqq_on_load(config: Hqq, /) -> bool:
    return True


@quantizes_on_load.register(Quanto)
def _quanto_on_load(config: Quanto, /) -> bool:
    return True


@quantizes_on_load.register(Eetq)
def _eetq_on_load(config: Eetq, /) -> bool:
    return True


@quantizes_on_load.register(Sinq)
def _sinq_on_load(config: Sinq, /) -> bool:
    return True


@quantizes_on_load.register(Metal)
def _metal_on_load(config: Metal, /) -> bool:
    return True


@cross_field_issues.register(AbstractAutoRound)
def _auto_round_rules(config: AbstractAutoRound, /) -> Issues:
    """The packing_format must name the packing the type stands for (a parsed config always does)."""
    named = auto_round_packing(config.packing_format)
    if named != config.packing:
        return (Issue("auto-round.packing_format.conflict", "$.packing_format",
                      f"packing_format {quote(config.packing_format)} names the {named} packing, but this is {type(config).__name__}",
                      "use the type of that packing, or a packing_format naming this one"),)
    if isinstance(config, AutoRoundAwq) and config.bits != 4:
        # auto_round/export/formats/backends/auto_awq.py refuses any other width, and WQLinear_GEMM packs 4 bits only.
        return (Issue("auto-round.bits.awq", "$.bits", f"AutoRound's AWQ packing holds 4-bit weights, not {config.bits}-bit",
                      "a packing_format naming gptq (or auto_round) stores 2, 3, 4 or 8 bits"),)
    return ()


@cross_field_issues.register(Mlx)
def _mlx_rules(config: Mlx, /) -> Issues:
    """Per-module overrides: ``false``, or ``{"bits", "group_size", "mode"}`` with MLX's values."""
    issues: list[Issue] = []
    allowed = {"bits": MLX_BITS, "group_size": MLX_GROUPS, "mode": MLX_MODES}
    for key, value in config.extras.items:
        if value is False or not isinstance(value, JsonObject) or "bits" not in value:
            continue  # not an override: an unrelated extra
        where = child_path("$", key)
        for sub, ok in allowed.items():
            v = value.get(sub)
            if sub in value and (type(v) is bool or v not in ok):
                issues.append(Issue(f"mlx.{sub}.not_allowed", f"{where}.{sub}", f"expected one of {list(ok)}, got {quote(v)}"))
    return tuple(issues)
