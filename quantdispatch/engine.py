"""From a config (and its plan) to a serving engine's arguments: vLLM's, for the same checkpoint.

Pure: a typed config in, ``EngineArgs`` or a ``Refusal`` out. The vLLM facts below are data read
from vLLM's public source (``vllm/model_executor/layers/quantization/``), with the commit each was
read at: its ``QUANTIZATION_METHODS`` list, the class each method string selects, that class's
``get_min_capability()``, and the ``override_quantization_method`` upgrades (GPTQ and AWQ
checkpoints become ``gptq_marlin`` / ``awq_marlin`` when Marlin can take them; ModelOpt picks
``modelopt`` or ``modelopt_fp4`` from ``quant_algo``).
"""

from __future__ import annotations

from typing import Final, Literal

import attrs

from .backend import Refusal
from .configs.awq import AbstractAwq, AwqGemm
from .configs.base import AbstractQuantConfig
from .configs.bnb import AbstractBnb
from .configs.compressed_tensors import CompressedTensors
from .configs.fp4 import FpQuant, Mxfp4
from .configs.fp8 import FbgemmFp8, Fp8, Mxfp8
from .configs.gguf import Gguf
from .configs.gptq import AbstractGptq
from .configs.integer import AbstractAutoRound
from .configs.modelopt import AbstractModelopt, ModeloptFp8, ModeloptMixed
from .configs.quark import Quark
from .configs.torchao import Torchao
from .environment import Cuda
from .methods._common import marlin_unfit
from .rules import compute_dtype

__all__ = ["EngineArgs", "vllm_args", "VLLM_QUANTIZATION_METHODS", "VLLM_DEPRECATED", "VLLM_MIN_CAPABILITY", "VLLM_SOURCE"]

VLLM_SOURCE: Final = "vllm-project/vllm vllm/model_executor/layers/quantization/__init__.py @ 05d909563e1d"
VLLM_QUANTIZATION_METHODS: Final[tuple[str, ...]] = (
    "awq", "fp8", "ptpc_fp8", "fbgemm_fp8", "fp_quant", "modelopt", "modelopt_fp4", "bitblas", "gguf", "gptq_marlin_24",
    "gptq_marlin", "gptq_bitblas", "awq_marlin", "gptq", "compressed-tensors", "bitsandbytes", "experts_int8", "ipex", "quark",
    "moe_wna16", "torchao", "inc", "mxfp4", "mxfp8", "petit_nvfp4", "cpu_awq",
)
"""``QuantizationMethods`` as listed at ``VLLM_SOURCE``."""
VLLM_DEPRECATED: Final[frozenset[str]] = frozenset({
    "tpu_int8", "ptpc_fp8", "fbgemm_fp8", "fp_quant", "bitblas", "gptq_marlin_24", "gptq_bitblas", "experts_int8", "ipex", "petit_nvfp4"})
"""``DEPRECATED_QUANTIZATION_METHODS`` at ``VLLM_SOURCE``: refused unless ``allow_deprecated_quantization``."""

VLLM_MIN_CAPABILITY: Final[dict[str, tuple[int, int]]] = {
    # read in vLLM's source (file, stored version):
    "fp8": (8, 0),            # Fp8Config (fp8.py @ 0071b24b); Marlin weight-only FP8 below sm_89
    "modelopt": (8, 9),       # ModelOptFp8Config (modelopt.py @ 00155cde)
    "modelopt_fp4": (7, 5),   # ModelOptNvFp4Config (modelopt.py)
    "awq_marlin": (8, 0),     # AWQMarlinConfig (awq_marlin.py)
    "torchao": (7, 5),        # TorchAOConfig (torchao.py)
    "mxfp8": (8, 0),          # Mxfp8Config (mxfp8.py)
    "compressed-tensors": (7, 0),  # CompressedTensorsConfig (compressed_tensors.py); schemes check their own floors later
    # from research/peers.md and vLLM's issues, not re-read here:
    "awq": (7, 5),            # vllm-project/vllm#4202: "Minimum capability: 75"
    "gguf": (6, 0),
    "gptq_marlin": (8, 0),    # check_marlin_supported: Ampere and newer
    "gptq": (6, 0),
    "bitsandbytes": (7, 0),
    "mxfp4": (8, 0),
    "fbgemm_fp8": (8, 0),
    "fp_quant": (10, 0),
    "quark": (7, 0),
    "inc": (6, 0),
}
"""``get_min_capability()`` of the class each method string selects (major, minor); where the
source was read, the file (and commit) is noted, the rest are documented floors not re-read."""


@attrs.frozen(kw_only=True)
class EngineArgs:
    """The arguments a serving engine needs for a checkpoint.

    Attributes:
        engine: ``"vllm"``.
        quantization: The engine's method string (``--quantization``).
        dtype: The activation dtype to serve in (``--dtype``).
        kv_cache_dtype: ``--kv-cache-dtype`` when the checkpoint quantizes the KV cache, else ``None``.
        min_capability: The lowest CUDA compute capability the engine accepts for it.
        notes: What else to know (deprecated methods, kernel upgrades).
    """

    engine: Literal["vllm"]
    quantization: str
    dtype: str
    kv_cache_dtype: str | None
    min_capability: tuple[int, int]
    notes: tuple[str, ...] = ()

    def as_cli(self) -> list[str]:
        """The engine's command-line flags."""
        out = ["--quantization", self.quantization, "--dtype", self.dtype]
        if self.kv_cache_dtype is not None:
            out += ["--kv-cache-dtype", self.kv_cache_dtype]
        return out


def _gptq_name(c: AbstractGptq, cap: tuple[int, int] | None) -> tuple[str, tuple[str, ...]]:
    ok = not marlin_unfit(c.bits, c.sym, c.group_size) and (cap is None or cap >= (8, 0))
    return ("gptq_marlin", ("vLLM upgrades Marlin-compatible GPTQ checkpoints to gptq_marlin (override_quantization_method)",)) if ok else (
        "gptq", ())


def _awq_name(c: AbstractAwq, cap: tuple[int, int] | None) -> tuple[str, tuple[str, ...]]:
    ok = not marlin_unfit(c.bits, True, c.group_size) and (cap is None or cap >= (8, 0))
    return ("awq_marlin", ("vLLM upgrades Marlin-compatible AWQ checkpoints to awq_marlin",)) if ok else ("awq", ())


def _method(config: AbstractQuantConfig, cap: tuple[int, int] | None) -> tuple[str, tuple[str, ...]] | Refusal:
    """vLLM's method string for a config type, or why vLLM cannot serve it."""
    if isinstance(config, AbstractGptq):
        return _gptq_name(config, cap)
    if isinstance(config, AbstractAwq):
        if not isinstance(config, AwqGemm):
            return Refusal("engine.vllm.unsupported", f"vLLM reads AWQ GEMM packing only, not {type(config).__name__}",
                           "re-pack the checkpoint as GEMM (AutoAWQ version 'gemm')")
        return _awq_name(config, cap)
    simple: tuple[tuple[type[AbstractQuantConfig], str], ...] = (
        (AbstractBnb, "bitsandbytes"), (Gguf, "gguf"), (Fp8, "fp8"), (Mxfp8, "mxfp8"), (FbgemmFp8, "fbgemm_fp8"), (Mxfp4, "mxfp4"),
        (FpQuant, "fp_quant"), (CompressedTensors, "compressed-tensors"), (Torchao, "torchao"), (Quark, "quark"), (AbstractAutoRound, "inc"),
    )
    for cls, name in simple:
        if isinstance(config, cls):
            return name, ()
    if isinstance(config, AbstractModelopt):
        nvfp4 = isinstance(config, ModeloptMixed) and any("NVFP4" in a for a in config.algorithms())
        name = "modelopt" if isinstance(config, ModeloptFp8) or (isinstance(config, ModeloptMixed) and not nvfp4) else "modelopt_fp4"
        return name, ("vLLM chooses the ModelOpt class from quant_algo (override_quantization_method)",)
    return Refusal("engine.vllm.unsupported", f"vLLM has no quantization method for {config.method or type(config).__name__} "
                   f"({type(config).__name__}) in its QUANTIZATION_METHODS", "serve it with Transformers, or convert the checkpoint")


def _kv_cache(config: AbstractQuantConfig) -> str | None:
    if isinstance(config, CompressedTensors) and config.kv_cache_scheme is not None:
        kv = config.kv_cache_scheme
        return "fp8" if kv.type == "float" and kv.num_bits == 8 else None
    if isinstance(config, AbstractModelopt) and config.kv_cache_quant_algo is not None:
        return {"FP8": "fp8", "NVFP4": "nvfp4"}.get(config.kv_cache_quant_algo)
    return None


def vllm_args(config: AbstractQuantConfig, device: Cuda | None = None, *, allow_deprecated: bool = False) -> EngineArgs | Refusal:
    """vLLM's arguments for a checkpoint's config, on ``device`` when given (its capability is checked).

    >>> from quantdispatch import Gptq
    >>> vllm_args(Gptq(bits=4)).as_cli()
    ['--quantization', 'gptq_marlin', '--dtype', 'float16']
    """
    cap = device.capability if device is not None else None
    found = _method(config, cap)
    if isinstance(found, Refusal):
        return found
    name, notes = found
    assert name in VLLM_QUANTIZATION_METHODS, name
    if name in VLLM_DEPRECATED and not allow_deprecated:
        return Refusal("engine.vllm.deprecated", f"vLLM deprecates {name!r}: it refuses it unless allow_deprecated_quantization is set",
                       "pass --allow-deprecated-quantization, or re-quantize with a supported method")
    need = VLLM_MIN_CAPABILITY.get(name, (7, 0))
    if cap is not None and cap < need:
        return Refusal("engine.vllm.capability", f"vLLM's {name} needs compute capability {need[0]}.{need[1]}+, the GPU has {cap[0]}.{cap[1]}")
    if name == "fp8" and cap is not None and cap < (8, 9):
        notes = (*notes, "below sm_89 vLLM runs FP8 weights through its weight-only Marlin kernel (no FP8 activations)")
    dtype, _ = compute_dtype(config, device if device is not None else Cuda(capability=(9, 0)))
    return EngineArgs(engine="vllm", quantization=name, dtype=dtype.value, kv_cache_dtype=_kv_cache(config), min_capability=need,
                      notes=notes + (("deprecated in vLLM",) if name in VLLM_DEPRECATED else ()))
