"""Bad copies of good checkpoints, for the bad-input loading tests: one change to the stored tensors
of a copy, the original left as it was."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["Change", "changed", "set_entry", "cast", "drop", "cut_last"]

Change = Callable[[dict[str, torch.Tensor]], None]
"""An edit of a checkpoint's tensors by name, in place."""


def changed(source: Path, out: Path, change: Change, *, quantization_config: dict[str, Any] | None = None) -> Path:
    """A copy of the checkpoint folder ``source`` at ``out`` whose ``model.safetensors`` has ``change``
    applied (and whose config holds ``quantization_config`` when one is given); returns ``out``."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, out)
    tensors = load_file(str(source / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(out / "model.safetensors"))
    if quantization_config is not None:
        document = json.loads((out / "config.json").read_text())
        document["quantization_config"] = quantization_config
        (out / "config.json").write_text(json.dumps(document))
    return out


def set_entry(name: str, index: tuple[int, ...], value: float) -> Change:
    """Tensor ``name``'s entry at ``index`` set to ``value`` (written through float32, stored in the tensor's own dtype)."""
    def change(tensors: dict[str, torch.Tensor]) -> None:
        t = tensors[name].float().clone()
        t[index] = value
        tensors[name] = t.to(tensors[name].dtype)
    return change


def cast(name: str, dtype: torch.dtype) -> Change:
    """Tensor ``name`` stored in ``dtype``."""
    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors[name] = tensors[name].to(dtype)
    return change


def drop(name: str) -> Change:
    """Tensor ``name`` left out."""
    def change(tensors: dict[str, torch.Tensor]) -> None:
        del tensors[name]
    return change


def cut_last(name: str, count: int) -> Change:
    """Tensor ``name`` less the last ``count`` entries of its last dimension."""
    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors[name] = tensors[name][..., :-count].contiguous()
    return change
