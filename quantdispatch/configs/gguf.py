"""GGUF: what a ``.gguf`` file says about how its tensors are quantized."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

import attrs

from ..gguf.types import GgmlType, LlamaFileType
from .base import AbstractQuantConfig

__all__ = ["Gguf", "GgufTensor"]


@attrs.frozen
class GgufTensor:
    """One tensor of a GGUF file: its name, GGML type and shape.

    Attributes:
        name: The GGUF tensor name (``blk.0.attn_q.weight``).
        ggml_type: How its elements are stored (``GgmlType.Q4_K``).
        shape: Dimensions in GGML order: ``shape[0]`` is the row length (``ne0``).
    """

    name: str
    ggml_type: GgmlType
    shape: tuple[int, ...] = ()


@attrs.frozen(kw_only=True)
class Gguf(AbstractQuantConfig):
    """A GGUF checkpoint: its architecture, recipe and per-tensor GGML types.

    Parsed from a GGUF header (``general.architecture``, ``general.file_type``, the tensor table)
    or from the JSON ``dump`` writes. Unlike the JSON methods, GGUF quantizes tensor by tensor: a
    ``Q4_K_M`` file mixes ``Q4_K``, ``Q6_K`` and ``F32`` tensors, so the types live per tensor.

    Attributes:
        architecture: ``general.architecture`` (``llama``, ``qwen2`` …), ``None`` if unknown.
        file_type: ``general.file_type``: the recipe the file was made with, if recorded.
        tensors: Every tensor's name, type and shape, in file order.
        quantization_version: ``general.quantization_version`` if recorded.
        gguf_file: Loading attribute (Transformers' ``GgufConfig``): the file inside a
            repository to read.
        dequantize: Loading attribute: dequantize every tensor to the compute dtype at load.
    """

    method: ClassVar[str] = "gguf"

    architecture: str | None = None
    file_type: LlamaFileType | None = None
    tensors: tuple[GgufTensor, ...] = ()
    quantization_version: int | None = None
    gguf_file: str | None = None
    dequantize: bool = False

    def type_counts(self) -> tuple[tuple[GgmlType, int], ...]:
        """Count tensors per GGML type, most common first."""
        return tuple(Counter(t.ggml_type for t in self.tensors).most_common())
