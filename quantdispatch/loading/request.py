"""What a backend's loader receives: everything it needs, decided already."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from ..plan import LoadPlan
from ..result import Issues, Result
from .checkpoint import Checkpoint
from .source import GgufSource

if TYPE_CHECKING:
    from torch import nn

__all__ = ["LoadRequest", "Loader"]


@attrs.frozen(kw_only=True)
class LoadRequest:
    """One load, planned.

    Attributes:
        directory: The checkpoint's directory.
        checkpoint: Its weight files, headers checked.
        plan: The plan to follow.
        trust_remote_code: Whether code shipped with the checkpoint may run.
        dequantize_at_load: Keep dense weights beside the packed ones (bigger, faster).
        mmap: Whether the loaded model may keep reading the checkpoint's memory-mapped pages
            (``False``: ``load`` copies them into private memory).
        progress: Called with (files done, files in all) while weights stream in.
        device_map: Where each module goes, as Transformers users write it (``"auto"``, ``"cpu"``,
            ``{"model.layers.1": "disk", …}``), through accelerate; ``None``: all on the plan's device.
        max_memory: Per-device budgets for ``device_map="auto"`` (``{"cpu": "2GiB", "disk": …}``).
        offload_folder: Where modules mapped to ``"disk"`` are kept.
        gguf: The GGUF model, its shards' headers read once while planning (``GgufSource``),
            for the GGUF backends, which map its files and read no header again (the
            safetensors ``checkpoint`` is then empty); ``None`` for a safetensors checkpoint.
    """

    directory: Path
    checkpoint: Checkpoint
    plan: LoadPlan
    trust_remote_code: bool = False
    dequantize_at_load: bool = False
    mmap: bool = True
    progress: Callable[[int, int], None] | None = None
    device_map: str | Mapping[str, str | int] | None = None
    max_memory: Mapping[str | int, int | str] | None = None
    offload_folder: Path | None = None
    gguf: GgufSource | None = None


Loader = Callable[[LoadRequest], "Result[tuple[nn.Module, int], Issues]"]
"""A backend's loader: the model and the bytes of weights it read, or issues."""
