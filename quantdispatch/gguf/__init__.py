"""GGUF metadata: the GGML type table, header values and a bounded, never-raising header reader.

>>> from quantdispatch.gguf import GgmlType, type_size
>>> type_size(GgmlType.Q4_K)
144
"""

from typing import TYPE_CHECKING

from .header import GgufHeader as GgufHeader
from .header import GgufScalar as GgufScalar
from .header import GgufValue as GgufValue
from .header import TensorInfo as TensorInfo
from .types import BLOCK as BLOCK
from .types import QK_K as QK_K
from .types import REMOVED_GGML_TYPES as REMOVED_GGML_TYPES
from .types import GgmlType as GgmlType
from .types import GgufValueType as GgufValueType
from .types import LlamaFileType as LlamaFileType
from .types import bits_per_weight as bits_per_weight
from .types import block_size as block_size
from .types import is_quantized as is_quantized
from .types import row_bytes as row_bytes
from .types import type_size as type_size

__all__ = [
    # the type table
    "GgmlType",
    "GgufValueType",
    "LlamaFileType",
    "BLOCK",
    "QK_K",
    "REMOVED_GGML_TYPES",
    "block_size",
    "type_size",
    "bits_per_weight",
    "is_quantized",
    "row_bytes",
    # header values
    "GgufHeader",
    "GgufScalar",
    "GgufValue",
    "TensorInfo",
    # reading
    "read_gguf_header",
    "read_gguf_file",
    "GgufLimits",
    "DEFAULT_LIMITS",
    "ISSUE_CODES",
    "MAX_ISSUES",
]

if TYPE_CHECKING:
    from .reader import DEFAULT_LIMITS as DEFAULT_LIMITS
    from .reader import ISSUE_CODES as ISSUE_CODES
    from .reader import MAX_ISSUES as MAX_ISSUES
    from .reader import GgufLimits as GgufLimits
    from .reader import read_gguf_file as read_gguf_file
    from .reader import read_gguf_header as read_gguf_header

_READER = frozenset({"DEFAULT_LIMITS", "ISSUE_CODES", "MAX_ISSUES", "GgufLimits", "read_gguf_header", "read_gguf_file"})


def __getattr__(name: str) -> object:
    """Import the file reader (the shell) on first use only: the pure core imports this package
    for the type table and header values."""
    if name in _READER:
        from . import reader

        return getattr(reader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
