"""Dequantize tensors of an open GGUF file and write them to one safetensors file (the CLI's ``dequant``)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch

from quantdispatch.gguf.data import TensorData

from .dequant import dequantize

__all__ = ["as_uint8", "dequantize_tensor", "write_safetensors", "DTYPES"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""Output dtypes by name."""


def as_uint8(data: memoryview) -> torch.Tensor:
    """A uint8 tensor over ``data`` without a copy; the kernels only read it.

    torch warns that a read-only buffer is not writable; the kernels never write to their input.
    """
    if not len(data):
        return torch.empty(0, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
        return torch.frombuffer(data, dtype=torch.uint8)


def dequantize_tensor(tensor: TensorData, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dequantize one tensor of an open file, in PyTorch's ``[out, in]`` shape."""
    return dequantize(as_uint8(tensor.data), tensor.ggml_type, tensor.torch_shape, dtype)


def write_safetensors(tensors: Sequence[TensorData], path: str | os.PathLike[str], dtype: str = "float32") -> None:
    """Dequantize ``tensors`` to ``dtype`` (a key of ``DTYPES``) and save them, by name, at ``path``.

    Raises:
        OSError: the file cannot be written.
    """
    import safetensors.torch  # the shell's dependency, only for this command

    out = {t.info.name: dequantize_tensor(t, DTYPES[dtype]) for t in tensors}
    try:
        safetensors.torch.save_file(out, os.fspath(path), metadata={"source": "quantdispatch dequant"})
    except safetensors.SafetensorError as e:  # its I/O errors are not OSErrors
        raise OSError(str(e)) from e
