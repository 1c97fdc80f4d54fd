"""GGUF block dequantization in torch, bit-exact against gguf-py 0.19.

>>> from quantdispatch.kernels.gguf import KERNELS
>>> from quantdispatch.gguf.blocks import DEQUANTIZABLE_TYPES
>>> set(KERNELS) == DEQUANTIZABLE_TYPES
True
"""

from ._common import KERNELS as KERNELS
from ._common import Kernel as Kernel
from .dequant import OUTPUT_DTYPES as OUTPUT_DTYPES
from .dequant import dequantize as dequantize

__all__ = ["dequantize", "KERNELS", "Kernel", "OUTPUT_DTYPES"]
