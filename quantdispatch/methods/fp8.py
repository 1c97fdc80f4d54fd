"""FP8 and FP4 formats: their backends (as data) and rules.

Capabilities, from the kernels' documentation and Transformers' quantizers: native FP8 matmuls
need Ada/Hopper (sm_89+); FBGEMM's FP8 kernels need Hopper (sm_90); the MX and NVFP4 tensor-core
formats need Blackwell (sm_100+); gpt-oss' MXFP4 Triton kernels run from Turing (sm_75). Without
them Transformers dequantizes FP8 and MXFP4 weights at load, which any device can do; here MXFP4
experts load kept packed (``layouts.mxfp4``: ``cpu-fp4-experts`` on a CPU, ``torch-packed`` anywhere).
"""

from __future__ import annotations

from ..backend import Backend, Candidate, Requirement
from ..configs.fp4 import FourOverSix, FpQuant, Mxfp4, Nvfp4
from ..configs.fp8 import AbstractFineGrainedFp8, FbgemmFp8, Fp8
from ..dtypes import DType
from ..environment import AbstractDevice, Cuda
from ..kernel import kernel_candidates
from ..layouts.base import layout_of
from ..result import Issue, Issues
from ..rules import Selection, compute_dtype, cross_field_issues, declare_backend, quantizes_on_load, select_backend, skip_modules
from ._common import ACCELERATE, TORCH, bf16_or_cpu_dtype

__all__ = ["FP8_TRITON", "FP8_DEQUANTIZE", "FBGEMM_FP8", "MXFP4_TRITON", "MXFP4_DEQUANTIZE", "NVFP4_KERNELS", "FOUROVERSIX",
           "FP_QUANT_QUTLASS", "FP_QUANT_TRITON"]

_BF16 = (DType.BFLOAT16,)
FP8_TRITON = declare_backend(Backend(
    name="transformers-fp8", summary="Transformers' block-FP8 Triton matmul (E4M3 weights, per-block scales)",
    requires=(TORCH, ACCELERATE, Requirement("triton", "3.0")), devices=("cuda",), min_capability=(8, 9),
    dtypes=(DType.BFLOAT16, DType.FLOAT16),
))
FP8_DEQUANTIZE = declare_backend(Backend(
    name="fp8-dequantize", summary="dequantize FP8 weights to the compute dtype at load (Transformers' fallback)",
    requires=(Requirement("torch", "2.1"),), devices=("cpu", "cuda"),
))
FBGEMM_FP8 = declare_backend(Backend(
    name="fbgemm-fp8", summary="FBGEMM's row-wise FP8 GEMM", requires=(TORCH, ACCELERATE, Requirement("fbgemm-gpu", "1.0")),
    devices=("cuda",), min_capability=(9, 0), dtypes=_BF16,
))
MXFP4_TRITON = declare_backend(Backend(
    name="triton-mxfp4", summary="the Triton MXFP4 MoE kernels from the kernels hub (gpt-oss)",
    requires=(TORCH, ACCELERATE, Requirement("triton", "3.4"), Requirement("kernels")), devices=("cuda",), min_capability=(7, 5),
    dtypes=_BF16,
))
MXFP4_DEQUANTIZE = declare_backend(Backend(
    name="mxfp4-dequantize", summary="dequantize MXFP4 weights to bfloat16 at load (Transformers' fallback)",
    requires=(TORCH, ACCELERATE), devices=("cpu", "cuda", "mps"),
))
NVFP4_KERNELS = declare_backend(Backend(
    name="nvfp4-blackwell", summary="NVFP4 tensor-core GEMMs (Blackwell), quantizing bfloat16 weights on the fly",
    requires=(TORCH,), devices=("cuda",), min_capability=(10, 0), dtypes=_BF16,
))
FOUROVERSIX = declare_backend(Backend(
    name="fouroversix", summary="the fouroversix package's NVFP4 kernels with adaptive block scales",
    requires=(TORCH, Requirement("fouroversix")), devices=("cuda",), min_capability=(10, 0), dtypes=_BF16,
))
FP_QUANT_QUTLASS = declare_backend(Backend(
    name="fp-quant-qutlass", summary="FP-Quant with QuTLASS' Blackwell MXFP4/NVFP4 kernels",
    requires=(TORCH, Requirement("fp_quant"), Requirement("qutlass")), devices=("cuda",), min_capability=(10, 0), dtypes=_BF16,
))
FP_QUANT_TRITON = declare_backend(Backend(
    name="fp-quant-pseudo", summary="FP-Quant's Triton pseudo-quantization (emulates the format; no Blackwell needed)",
    requires=(TORCH, Requirement("fp_quant"), Requirement("triton", "3.0")), devices=("cuda",), min_capability=(8, 0), dtypes=_BF16,
))


@select_backend.register(AbstractFineGrainedFp8, Cuda)
def _fp8_cuda(config: AbstractFineGrainedFp8, device: Cuda, /) -> Selection:
    native = () if isinstance(config, Fp8) else ("Transformers has no native MXFP8 kernel: it reuses the FP8 dequantization path",)
    if config.dequantize:
        native = (*native, "dequantize is set")
    # The layout's kernels (the portable one keeps the e4m3 bytes) after Transformers' own paths on a GPU.
    return (Candidate(FP8_TRITON, native), Candidate(FP8_DEQUANTIZE), *kernel_candidates(layout_of(config), device))


@select_backend.register(AbstractFineGrainedFp8, AbstractDevice)
def _fp8_any(config: AbstractFineGrainedFp8, device: AbstractDevice, /) -> Selection:
    return (Candidate(FP8_DEQUANTIZE),)


@select_backend.register(FbgemmFp8, AbstractDevice)
def _fbgemm(config: FbgemmFp8, device: AbstractDevice, /) -> Selection:
    return (Candidate(FBGEMM_FP8), *kernel_candidates(layout_of(config), device))


@select_backend.register(Mxfp4, AbstractDevice)
def _mxfp4(config: Mxfp4, device: AbstractDevice, /) -> Selection:
    # Transformers' Triton kernels on a GPU, then the layout's kernels (the experts kept packed, or
    # dequantized at load when dequantize is set), then Transformers' fallback (planning only).
    return (Candidate(MXFP4_TRITON, ("dequantize is set",) if config.dequantize else ()),
            *kernel_candidates(layout_of(config), device), Candidate(MXFP4_DEQUANTIZE))


@select_backend.register(Nvfp4, AbstractDevice)
def _nvfp4(config: Nvfp4, device: AbstractDevice, /) -> Selection:
    return (Candidate(NVFP4_KERNELS),)


@select_backend.register(FourOverSix, AbstractDevice)
def _fouroversix(config: FourOverSix, device: AbstractDevice, /) -> Selection:
    return (Candidate(FOUROVERSIX),)


@select_backend.register(FpQuant, AbstractDevice)
def _fp_quant(config: FpQuant, device: AbstractDevice, /) -> Selection:
    pseudo = config.pseudoquantization
    return (Candidate(FP_QUANT_QUTLASS, ("pseudoquantization is set",) if pseudo else ()),
            Candidate(FP_QUANT_TRITON, () if pseudo else ("pseudoquantization is not set",)))


@compute_dtype.register(AbstractFineGrainedFp8, AbstractDevice)
def _fp8_dtype(config: AbstractFineGrainedFp8, device: AbstractDevice, /) -> tuple[DType, str]:
    return bf16_or_cpu_dtype(device)


@compute_dtype.register(FbgemmFp8, AbstractDevice)
def _fbgemm_dtype(config: FbgemmFp8, device: AbstractDevice, /) -> tuple[DType, str]:
    return bf16_or_cpu_dtype(device)


@compute_dtype.register(Mxfp4, AbstractDevice)
def _mxfp4_dtype(config: Mxfp4, device: AbstractDevice, /) -> tuple[DType, str]:
    return DType.BFLOAT16, "MXFP4 weights dequantize to bfloat16 (the kernels' and the fallback's dtype)"


@compute_dtype.register(Nvfp4, AbstractDevice)
def _nvfp4_dtype(config: Nvfp4, device: AbstractDevice, /) -> tuple[DType, str]:
    return DType.BFLOAT16, "NVFP4 kernels take bfloat16 activations"


@compute_dtype.register(FourOverSix, AbstractDevice)
def _fos_dtype(config: FourOverSix, device: AbstractDevice, /) -> tuple[DType, str]:
    return DType.BFLOAT16, "Four Over Six computes in bfloat16"


@compute_dtype.register(FpQuant, AbstractDevice)
def _fp_quant_dtype(config: FpQuant, device: AbstractDevice, /) -> tuple[DType, str]:
    return DType.BFLOAT16, "FP-Quant forces bfloat16"


@skip_modules.register(AbstractFineGrainedFp8)
def _fp8_skips(config: AbstractFineGrainedFp8, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert


@skip_modules.register(FbgemmFp8)
def _fbgemm_skips(config: FbgemmFp8, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert


@skip_modules.register(Mxfp4)
def _mxfp4_skips(config: Mxfp4, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert


@skip_modules.register(Nvfp4)
def _nvfp4_skips(config: Nvfp4, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert


@skip_modules.register(FourOverSix)
def _fos_skips(config: FourOverSix, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert


@skip_modules.register(FpQuant)
def _fp_quant_skips(config: FpQuant, /) -> tuple[str, ...] | None:
    return ("lm_head",) if config.modules_to_not_convert is None else config.modules_to_not_convert


# Transformers quantizes bfloat16 weights into these formats while loading (no calibration run).
@quantizes_on_load.register(AbstractFineGrainedFp8)
def _fp8_on_load(config: AbstractFineGrainedFp8, /) -> bool:
    return True


@quantizes_on_load.register(FbgemmFp8)
def _fbgemm_on_load(config: FbgemmFp8, /) -> bool:
    return True


@quantizes_on_load.register(Mxfp4)
def _mxfp4_on_load(config: Mxfp4, /) -> bool:
    return True


@quantizes_on_load.register(Nvfp4)
def _nvfp4_on_load(config: Nvfp4, /) -> bool:
    return True


@quantizes_on_load.register(FourOverSix)
def _fos_on_load(config: FourOverSix, /) -> bool:
    return True


@quantizes_on_load.register(FpQuant)
def _fp_quant_on_load(config: FpQuant, /) -> bool:
    return True


@cross_field_issues.register(FpQuant)
def _fp_quant_rules(config: FpQuant, /) -> Issues:
    issues: list[Issue] = []
    hgs = config.effective_hadamard_group_size
    if config.forward_dtype == "mxfp4":
        if hgs not in (32, 64, 128):
            issues.append(Issue("fp_quant.hadamard_group_size.not_allowed", "$.hadamard_group_size",
                                f"MXFP4 takes a Hadamard group size of 32, 64 or 128, not {hgs}"))
    elif config.forward_method != "abs_max":
        issues.append(Issue("fp_quant.forward_method.conflict", "$.forward_method", "NVFP4 supports forward_method 'abs_max' only",
                            "use abs_max, or forward_dtype mxfp4 for quest"))
    if config.backward_dtype != "bf16" and config.forward_dtype != "mxfp4":
        issues.append(Issue("fp_quant.backward_dtype.conflict", "$.backward_dtype",
                            f"backward_dtype {config.backward_dtype!r} needs forward_dtype 'mxfp4'"))
    return tuple(issues)
