"""Codebook methods (AQLM, VPTQ, SpQR, HIGGS), torchao and Quark: backends (as data) and rules.

HIGGS runs on FLUTE, whose kernels target Ampere and newer (sm_80+); VPTQ and SpQR ship CUDA
kernels only; AQLM has CUDA and (numba) CPU kernels. torchao's float8 configs need sm_89+.
"""

from __future__ import annotations

from ..backend import Backend, Candidate, Requirement
from ..configs.codebook import Aqlm, Higgs, Spqr, Vptq
from ..configs.quark import Quark
from ..configs.torchao import Torchao
from ..dtypes import DType
from ..environment import AbstractDevice, Cuda
from ..result import Issue, Issues
from ..rules import Selection, compute_dtype, cross_field_issues, declare_backend, quantizes_on_load, select_backend, skip_modules
from ._common import ACCELERATE, TORCH, bf16_or_cpu_dtype

__all__ = ["AQLM", "VPTQ", "SPQR", "FLUTE", "TORCHAO", "QUARK"]

AQLM = declare_backend(Backend(name="aqlm", summary="AQLM's codebook kernels (CUDA; numba on the CPU)",
                               requires=(TORCH, ACCELERATE, Requirement("aqlm", "1.0.2")), devices=("cpu", "cuda")))
VPTQ = declare_backend(Backend(name="vptq", summary="VPTQ's vector-quantized linear CUDA kernels",
                               requires=(TORCH, ACCELERATE, Requirement("vptq", "0.0.4")), devices=("cuda",)))
SPQR = declare_backend(Backend(name="spqr", summary="SpQR's sparse-quantized CUDA kernels",
                               requires=(TORCH, ACCELERATE, Requirement("spqr_quant")), devices=("cuda",), dtypes=(DType.FLOAT16,)))
FLUTE = declare_backend(Backend(name="flute-higgs", summary="FLUTE lookup-table GEMMs with Hadamard transforms (HIGGS)",
                                requires=(TORCH, ACCELERATE, Requirement("flute-kernel", "0.3.0"), Requirement("fast_hadamard_transform")),
                                devices=("cuda",), min_capability=(8, 0), dtypes=(DType.FLOAT16, DType.BFLOAT16)))
TORCHAO = declare_backend(Backend(name="torchao", summary="torchao's tensor subclasses (int4/int8/float8 layouts)",
                                  requires=(Requirement("torch", "2.6"), Requirement("torchao", "0.15.0")), devices=("cpu", "cuda", "mps")))
QUARK = declare_backend(Backend(name="amd-quark", summary="AMD Quark's quantized linear layers (real or emulated)",
                                requires=(TORCH, Requirement("amd-quark", "0.12")), devices=("cpu", "cuda")))


@select_backend.register(Aqlm, AbstractDevice)
def _aqlm(config: Aqlm, device: AbstractDevice, /) -> Selection:
    return (Candidate(AQLM),)


@select_backend.register(Vptq, AbstractDevice)
def _vptq(config: Vptq, device: AbstractDevice, /) -> Selection:
    return (Candidate(VPTQ),)


@select_backend.register(Spqr, AbstractDevice)
def _spqr(config: Spqr, device: AbstractDevice, /) -> Selection:
    return (Candidate(SPQR),)


@select_backend.register(Higgs, AbstractDevice)
def _higgs(config: Higgs, device: AbstractDevice, /) -> Selection:
    return (Candidate(FLUTE),)


def _torchao_unfit(config: Torchao, capability: tuple[int, int] | None) -> tuple[str, ...]:
    if config.quant_type.name.startswith("Float8") and (capability is None or capability < (8, 9)):
        return (f"{config.quant_type.name} needs float8 matmuls: a CUDA GPU with compute capability 8.9+",)
    return ()


@select_backend.register(Torchao, Cuda)
def _torchao_cuda(config: Torchao, device: Cuda, /) -> Selection:
    return (Candidate(TORCHAO, _torchao_unfit(config, device.capability)),)


@select_backend.register(Torchao, AbstractDevice)
def _torchao_any(config: Torchao, device: AbstractDevice, /) -> Selection:
    return (Candidate(TORCHAO, _torchao_unfit(config, None)),)


@select_backend.register(Quark, AbstractDevice)
def _quark(config: Quark, device: AbstractDevice, /) -> Selection:
    return (Candidate(QUARK),)


@compute_dtype.register(Higgs, AbstractDevice)
def _higgs_dtype(config: Higgs, device: AbstractDevice, /) -> tuple[DType, str]:
    return bf16_or_cpu_dtype(device)


@compute_dtype.register(Torchao, AbstractDevice)
def _torchao_dtype(config: Torchao, device: AbstractDevice, /) -> tuple[DType, str]:
    return bf16_or_cpu_dtype(device)


@compute_dtype.register(Spqr, AbstractDevice)
def _spqr_dtype(config: Spqr, device: AbstractDevice, /) -> tuple[DType, str]:
    return DType.FLOAT16, "SpQR's kernels compute in float16"


@skip_modules.register(Aqlm)
def _aqlm_skips(config: Aqlm, /) -> tuple[str, ...] | None:
    return config.linear_weights_not_to_quantize


@skip_modules.register(Vptq)
def _vptq_skips(config: Vptq, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert


@skip_modules.register(Spqr)
def _spqr_skips(config: Spqr, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert


@skip_modules.register(Higgs)
def _higgs_skips(config: Higgs, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert


@skip_modules.register(Torchao)
def _torchao_skips(config: Torchao, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert


@skip_modules.register(Quark)
def _quark_skips(config: Quark, /) -> tuple[str, ...] | None:
    return config.exclude


@quantizes_on_load.register(Higgs)
def _higgs_on_load(config: Higgs, /) -> bool:
    return True


@quantizes_on_load.register(Torchao)
def _torchao_on_load(config: Torchao, /) -> bool:
    return True


@cross_field_issues.register(Higgs)
def _higgs_rules(config: Higgs, /) -> Issues:
    if config.hadamard_size % config.group_size:
        return (Issue("higgs.hadamard_size.conflict", "$.hadamard_size",
                      f"hadamard_size {config.hadamard_size} is not a multiple of group_size {config.group_size}"),)
    return ()
