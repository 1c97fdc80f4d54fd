"""Writing compressed-tensors checkpoints with compressed-tensors itself, for the loading tests.

Every format goes the same way: the scheme applied to a tiny llama (``ignore=["lm_head"]``), each
quantized layer's scales (and zero points) set from its weight by the test's ``calibrate``, the
model compressed by ``ModelCompressor`` and saved with its config, then decompressed again: the
weights compressed-tensors itself reads back, which the tests' reference models hold.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

__all__ = ["quiet", "ct", "Calibrate", "write_with_compressed_tensors"]

Calibrate = Callable[[Any, torch.Tensor], None]
"""Set one quantized layer's parameters (``weight_scale``, ``weight_zero_point``, …) from its weight."""


def quiet() -> warnings.catch_warnings[None]:
    """compressed-tensors' imports and calls warn (torchao's, its own deprecations); none of it is ours to check."""
    return warnings.catch_warnings(action="ignore")


def ct(module: str) -> Any:
    """``compressed_tensors.<module>``, imported quietly; the test skips where it is not installed."""
    with quiet():
        return pytest.importorskip(f"compressed_tensors.{module}")


def write_with_compressed_tensors(out: Path, model: Any, scheme: Any, fmt: str, calibrate: Calibrate,
                                  dropped: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Quantize ``model`` in place with ``scheme`` in format ``fmt`` (``calibrate`` sets each layer's
    parameters), write the compressed checkpoint to ``out`` (a new folder), and return the state
    dict compressed-tensors decompresses it to, less the parameters whose last name part starts
    with one of ``dropped``: a dense model's weights."""
    from safetensors.torch import save_file

    quantization, compressors = ct("quantization"), ct("compressors")
    config = quantization.QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"], format=fmt)
    with quiet():
        quantization.apply_quantization_config(model, config)
    for module in model.modules():
        if getattr(module, "weight_scale", None) is not None:
            calibrate(module, getattr(module, "weight").data)  # noqa: B009 (a Linear's weight, typed as Tensor | Module)
    with quiet():
        compressor = compressors.ModelCompressor.from_pretrained_model(model, fmt)
        compressor.compress_model(model)
    out.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    model.config.save_pretrained(out)
    compressor.update_config(str(out))
    with quiet():
        compressor.decompress_model(model)
    state: dict[str, torch.Tensor] = model.state_dict()
    return {k: v for k, v in state.items() if not k.rpartition(".")[2].startswith(dropped)}
