"""A third-party plugin, written as an outside author would: a new method, its codec, a backend.

It adds HQQ checkpoints in a flat layout (``quant_method: "hqq_flat"``: ``nbits`` at the top level,
where the built-in ``hqq`` reads Transformers' nested ``quant_config``), without touching
quantdispatch's code, and must pass ``mypy --strict`` like any typed client.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, Literal

import attrs

import quantdispatch as qd
from quantdispatch.codec import fields as F

__all__ = ["Hqq", "HQQ_TORCH", "HQQ_SPEC", "register"]

HQQ_BITS: Final[tuple[Literal[1, 2, 3, 4, 8], ...]] = (1, 2, 3, 4, 8)


@attrs.frozen(kw_only=True)
class Hqq(qd.AbstractQuantConfig):
    """HQQ weights: ``nbits`` with a per-group scale and zero, grouped along ``axis``."""

    method: ClassVar[str] = "hqq_flat"

    nbits: Literal[1, 2, 3, 4, 8] = 4
    group_size: int = 64
    axis: Literal[0, 1] = 1


HQQ_SPEC: qd.TypeSpec[Hqq] = qd.TypeSpec(
    Hqq,
    fields=(
        F.field(Hqq, "nbits", F.one_of(HQQ_BITS)),
        F.field(Hqq, "group_size", F.integer(lo=1)),
        F.field(Hqq, "axis", F.one_of((0, 1))),
    ),
)

HQQ_TORCH = qd.Backend(
    name="hqq-torch", summary="the plugin's torch kernel", requires=(qd.Requirement("torch", "2.4"), qd.Requirement("hqq")),
    loader="tests.typing.qd_plugin.kernels:load_hqq",
)


def _select_hqq(config: Hqq, device: qd.AbstractDevice) -> qd.Candidate | None:
    return qd.Candidate(HQQ_TORCH, () if config.nbits != 1 else ("1-bit needs the CUDA kernel",))


def hqq_anywhere(config: Hqq, device: qd.AbstractDevice, /) -> tuple[qd.Candidate, ...] | qd.Refusal:
    """Offer the plugin's torch kernel on every device kind."""
    found = _select_hqq(config, device)
    return (found,) if found is not None else qd.Refusal("hqq.none", "no kernel")


_registered: list[Any] = []


def register() -> None:
    """Register the codec entry and the backend (idempotent, so tests may call it twice)."""
    if _registered:
        return
    qd.register_codec((HQQ_SPEC,))
    qd.declare_backend(HQQ_TORCH)
    qd.register_backend(Hqq, qd.AbstractDevice)(hqq_anywhere)
    qd.quantizes_on_load.register(Hqq)(hqq_quantizes_on_load)
    qd.compute_dtype.register(Hqq, qd.AbstractDevice)(hqq_compute_dtype)
    _registered.append(True)


def hqq_quantizes_on_load(config: Hqq, /) -> bool:
    """HQQ needs no calibration data: full-precision weights are quantized while loading."""
    return True


def hqq_compute_dtype(config: Hqq, device: qd.AbstractDevice, /) -> tuple[qd.DType, str]:
    """HQQ's kernels compute in bfloat16."""
    return qd.DType.BFLOAT16, "HQQ kernels compute in bfloat16"
