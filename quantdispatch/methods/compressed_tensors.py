"""compressed-tensors and NVIDIA ModelOpt: backends (as data) and rules.

compressed-tensors (>= 0.15, Transformers' floor) decompresses any scheme to dense weights on any
device; its FP8 kernels need sm_89+ (Transformers: "FP8 kernels need CUDA sm>=8.9"). ModelOpt
checkpoints are served by TensorRT-LLM or vLLM; in-process they need nvidia-modelopt, FP8 on
sm_89+ and NVFP4 on Blackwell (sm_100+).
"""

from __future__ import annotations

from ..backend import Backend, Candidate, Requirement
from ..configs.compressed_tensors import CompressedTensors
from ..configs.modelopt import AbstractModelopt, ModeloptFp8, ModeloptMixed
from ..dtypes import DType
from ..environment import AbstractDevice, Cuda
from ..kernel import kernel_candidates
from ..layouts import layout_of
from ..result import Issue, Issues
from ..rules import Selection, compute_dtype, cross_field_issues, declare_backend, select_backend, skip_modules
from ._common import TORCH, bf16_or_cpu_dtype

__all__ = ["CT_DECOMPRESS", "CT_FP8", "MODELOPT_FP8", "MODELOPT_NVFP4", "has_fp8_schemes"]

_CT = Requirement("compressed-tensors", "0.15.0")
CT_DECOMPRESS = declare_backend(Backend(
    name="compressed-tensors", summary="compressed-tensors' decompressors: every scheme to dense weights at load",
    requires=(TORCH, _CT), devices=("cpu", "cuda"),
))
CT_FP8 = declare_backend(Backend(
    name="compressed-tensors-fp8", summary="compressed-tensors' FP8 kernels (E4M3 weights and activations)",
    requires=(TORCH, _CT), devices=("cuda",), min_capability=(8, 9), dtypes=(DType.BFLOAT16, DType.FLOAT16),
))
_MODELOPT = Requirement("nvidia-modelopt", "0.27")
MODELOPT_FP8 = declare_backend(Backend(
    name="modelopt-fp8", summary="NVIDIA ModelOpt's FP8 (E4M3) linear layers",
    requires=(TORCH, _MODELOPT), devices=("cuda",), min_capability=(8, 9), dtypes=(DType.BFLOAT16, DType.FLOAT16),
))
MODELOPT_NVFP4 = declare_backend(Backend(
    name="modelopt-nvfp4", summary="NVIDIA ModelOpt's NVFP4 linear layers (Blackwell tensor cores)",
    requires=(TORCH, _MODELOPT), devices=("cuda",), min_capability=(10, 0), dtypes=(DType.BFLOAT16,),
))


def has_fp8_schemes(config: CompressedTensors) -> bool:
    """Whether any group quantizes weights to 8-bit floats (what the FP8 kernels run)."""
    return any(s.weights is not None and s.weights.type == "float" and s.weights.num_bits == 8 for s in config.schemes())


@select_backend.register(CompressedTensors, Cuda)
def _ct_cuda(config: CompressedTensors, device: Cuda, /) -> Selection:
    unfit = () if has_fp8_schemes(config) else ("no FP8 scheme: the FP8 kernels have nothing to run",)
    if config.effective_dequantize:
        unfit = (*unfit, "dequantize is set")
    return (Candidate(CT_FP8, unfit), *kernel_candidates(layout_of(config), device), Candidate(CT_DECOMPRESS))


@select_backend.register(CompressedTensors, AbstractDevice)
def _ct_any(config: CompressedTensors, device: AbstractDevice, /) -> Selection:
    return (Candidate(CT_DECOMPRESS),)


@compute_dtype.register(CompressedTensors, AbstractDevice)
def _ct_dtype(config: CompressedTensors, device: AbstractDevice, /) -> tuple[DType, str]:
    return bf16_or_cpu_dtype(device)


@skip_modules.register(CompressedTensors)
def _ct_skips(config: CompressedTensors, /) -> tuple[str, ...] | None:
    return config.ignore


@cross_field_issues.register(CompressedTensors)
def _ct_rules(config: CompressedTensors, /) -> Issues:
    if config.kv_cache_scheme is not None and not config.config_groups:
        return (Issue("compressed-tensors.config_groups.missing", "$", "a kv_cache_scheme needs config_groups beside it",
                      "compressed-tensors' QuantizationConfig requires config_groups; add an empty group list or remove the scheme"),)
    return ()


def _nvfp4_layers(config: AbstractModelopt) -> bool:
    if isinstance(config, ModeloptMixed):
        return any("NVFP4" in a for a in config.algorithms())
    return not isinstance(config, ModeloptFp8)


@select_backend.register(AbstractModelopt, AbstractDevice)
def _modelopt(config: AbstractModelopt, device: AbstractDevice, /) -> Selection:
    # ModelOpt's own layers first where they run (Blackwell); then the kernels of the layout, if any.
    return (Candidate(MODELOPT_NVFP4 if _nvfp4_layers(config) else MODELOPT_FP8), *kernel_candidates(layout_of(config), device))


@compute_dtype.register(AbstractModelopt, AbstractDevice)
def _modelopt_dtype(config: AbstractModelopt, device: AbstractDevice, /) -> tuple[DType, str]:
    return DType.BFLOAT16, "ModelOpt exports compute in bfloat16"


@skip_modules.register(AbstractModelopt)
def _modelopt_skips(config: AbstractModelopt, /) -> tuple[str, ...] | None:
    return config.exclude_modules
