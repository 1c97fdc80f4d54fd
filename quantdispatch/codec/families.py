"""Registers the codec entries of every family beyond bitsandbytes, GPTQ, AWQ and GGUF.

One ``register_codec`` per method string: Transformers 5's remaining 22 (``fp8`` and ``mxfp8``
share a field table but are two types) and two formats Transformers does not dispatch, NVIDIA
ModelOpt and MLX.
"""

from __future__ import annotations

from .codebook import AQLM_SPEC, HIGGS_SPEC, QUARK_SPEC, SPQR_SPEC, TORCHAO_SPEC, VPTQ_SPEC
from .compressed_tensors import CT_ALIASES, CT_SPEC
from .fp8 import FBGEMM_FP8_SPEC, FOUROVERSIX_SPEC, FP8_SPEC, FP_QUANT_SPEC, MXFP4_SPEC, MXFP8_SPEC, NVFP4_SPEC
from .integer import AUTO_ROUND_SPECS, BITNET_SPEC, EETQ_SPEC, GEMMA_SPEC, HQQ_SPEC, METAL_SPEC, QUANTO_SPEC, SINQ_SPEC, select_auto_round
from .modelopt import MLX_SPEC, MODELOPT_SPECS, looks_like_modelopt, select_modelopt
from .registry import register_codec

__all__: list[str] = []

for _spec in (FP8_SPEC, MXFP8_SPEC, FBGEMM_FP8_SPEC, MXFP4_SPEC, NVFP4_SPEC, FOUROVERSIX_SPEC, FP_QUANT_SPEC,
              HQQ_SPEC, QUANTO_SPEC, EETQ_SPEC, SINQ_SPEC, METAL_SPEC, GEMMA_SPEC, BITNET_SPEC,
              AQLM_SPEC, VPTQ_SPEC, SPQR_SPEC, HIGGS_SPEC, TORCHAO_SPEC, QUARK_SPEC, MLX_SPEC):
    register_codec((_spec,))
register_codec(AUTO_ROUND_SPECS, select_auto_round)
register_codec((CT_SPEC,), aliases=CT_ALIASES)
register_codec(MODELOPT_SPECS, select_modelopt, recognise=looks_like_modelopt)
