"""Torch kernels: GPTQ and AWQ packed weights, unpacked, dequantized and run as portable modules.

Importing this package imports no torch; each name loads its submodule on first access (as attrs
loads its lazy submodules). The submodules are the shell: they import torch.

- :mod:`.gptq`: GPTQ ``qweight``/``qzeros``/``scales``/``g_idx`` (2, 3, 4, 8 bits; v1 and v2 zeros).
- :mod:`.awq`: AWQ GEMM, GEMV and GEMV_FAST packings.
- :mod:`.modules`: ``GptqLinear`` and ``AwqLinear``, and ``PackedLinear``, the portable module of
  any layout that dequantizes itself (``layout.dequantize``).
- :mod:`.gguf`: every GGML block type dequantized (eager torch, and fused C kernels where a
  compiler is present).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._common import TensorSpec as TensorSpec
    from .awq import (
        awq_expected_tensors as awq_expected_tensors,
    )
    from .awq import (
        dequantize_awq_gemm as dequantize_awq_gemm,
    )
    from .awq import (
        dequantize_awq_gemv as dequantize_awq_gemv,
    )
    from .awq import (
        dequantize_awq_gemv_fast as dequantize_awq_gemv_fast,
    )
    from .awq import (
        unpack_awq_gemm as unpack_awq_gemm,
    )
    from .awq import (
        unpack_awq_gemv as unpack_awq_gemv,
    )
    from .awq import (
        unpack_awq_gemv_fast as unpack_awq_gemv_fast,
    )
    from .gptq import (
        dequantize_gptq as dequantize_gptq,
    )
    from .gptq import (
        gptq_expected_tensors as gptq_expected_tensors,
    )
    from .gptq import (
        gptq_linear as gptq_linear,
    )
    from .gptq import (
        gptq_v1_zeros as gptq_v1_zeros,
    )
    from .gptq import (
        unpack_gptq_qweight as unpack_gptq_qweight,
    )
    from .gptq import (
        unpack_gptq_qzeros as unpack_gptq_qzeros,
    )
    from .modules import AwqLinear as AwqLinear
    from .modules import GptqLinear as GptqLinear
    from .modules import PackedLinear as PackedLinear

__all__ = [
    "TensorSpec", "gptq_expected_tensors", "unpack_gptq_qweight", "unpack_gptq_qzeros", "dequantize_gptq", "gptq_linear",
    "gptq_v1_zeros",
    "awq_expected_tensors", "unpack_awq_gemm", "dequantize_awq_gemm", "unpack_awq_gemv", "dequantize_awq_gemv",
    "unpack_awq_gemv_fast", "dequantize_awq_gemv_fast", "GptqLinear", "AwqLinear", "PackedLinear",
]

_HOME: Final = {
    "TensorSpec": "._common",
    **dict.fromkeys(("gptq_expected_tensors", "unpack_gptq_qweight", "unpack_gptq_qzeros", "dequantize_gptq", "gptq_linear",
                     "gptq_v1_zeros"), ".gptq"),
    **dict.fromkeys(("awq_expected_tensors", "unpack_awq_gemm", "dequantize_awq_gemm", "unpack_awq_gemv",
                     "dequantize_awq_gemv", "unpack_awq_gemv_fast", "dequantize_awq_gemv_fast"), ".awq"),
    **dict.fromkeys(("GptqLinear", "AwqLinear", "PackedLinear"), ".modules"),
}


def __getattr__(name: str) -> object:
    """Import the submodule that defines ``name`` (and torch with it) on first access."""
    home = _HOME.get(name)
    if home is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    return getattr(importlib.import_module(home, __name__), name)
