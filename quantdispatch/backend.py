"""Backends as data: what each one needs, so that planning can check it without importing it.

A ``Backend`` is a descriptor: its name, the packages and versions it imports, the devices and
compute capabilities it runs on, the compute dtypes it supports, and a lazy reference to the
function that executes it (``loader``: ``"package.module:function"``, imported only when a plan
is executed). Planning only reads descriptors. A kernel (``quantdispatch.kernel``) is seen by the
planner as the backend of its name; each built-in method declares its other backends (external
packages' modules), their fit rules and its dispatch rules side by side in one module of
``quantdispatch.methods``. A backend with ``loader=None`` is planning-only, and says so in the plan.
"""

from __future__ import annotations

import functools
from typing import Literal

import attrs

from .dtypes import DType
from .environment import Environment, Version

__all__ = ["Requirement", "Backend", "Candidate", "Refusal", "unmet"]


@functools.lru_cache(maxsize=256)
def _version(text: str) -> Version:
    return Version.parse(text)

DeviceKind = Literal["cpu", "cuda", "mps"]


@attrs.frozen
class Requirement:
    """A distribution a backend imports, with an optional version range ``[minimum, below)``."""

    package: str
    minimum: str | None = None
    below: str | None = None

    def check(self, env: Environment) -> str | None:
        """Return why ``env`` does not satisfy this requirement, or ``None`` when it does."""
        found = env.version_of(self.package)
        if found is None:
            return f"needs {self}, which is not installed"
        if self.minimum is not None and found < _version(self.minimum):
            return f"needs {self}, found {found}"
        if self.below is not None and not found < _version(self.below):
            return f"needs {self}, found {found}"
        return None

    def __str__(self) -> str:
        spec = ",".join(s for s in (f">={self.minimum}" if self.minimum else "", f"<{self.below}" if self.below else "") if s)
        return f"{self.package}{spec}"


@attrs.frozen(kw_only=True)
class Backend:
    """A way of running one quantization method's weights.

    Attributes:
        name: Stable identifier, used in plans and by ``LoadOptions(backend=...)``.
        summary: One line saying what it is.
        requires: Packages it imports.
        devices: Device kinds it runs on.
        min_capability: For CUDA, the lowest compute capability it supports.
        dtypes: Compute dtypes it supports (activations and dequantized weights).
        loader: Where the function that executes it lives, as ``"module:function"``; imported
            only at execute. ``None`` for a backend this version can plan but not execute.
    """

    name: str
    summary: str
    requires: tuple[Requirement, ...] = ()
    devices: tuple[DeviceKind, ...] = ("cpu", "cuda")
    min_capability: tuple[int, int] | None = None
    dtypes: tuple[DType, ...] = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16)
    loader: str | None = None


@attrs.frozen
class Candidate:
    """A backend offered for a (config, device) pair, with the config-specific reasons it cannot
    take this particular config (empty when it can)."""

    backend: Backend
    unfit: tuple[str, ...] = ()


@attrs.frozen
class Refusal:
    """No backend exists for a (config type, device kind) pair: a typed answer, not an exception.

    Attributes:
        code: Stable code, e.g. ``awq.marlin.no_cpu``.
        message: Why.
        hint: What to do instead.
    """

    code: str
    message: str
    hint: str | None = None


def unmet(backend: Backend, env: Environment, device_kind: DeviceKind, capability: tuple[int, int] | None,
          dtype: DType) -> tuple[str, ...]:
    """Every reason ``backend`` cannot run here; empty when it can."""
    reasons = [r for r in (req.check(env) for req in backend.requires) if r is not None]
    if device_kind not in backend.devices:
        reasons.append(f"does not run on {device_kind}")
    if capability is not None and backend.min_capability is not None and capability < backend.min_capability:
        need, have = backend.min_capability, capability
        reasons.append(f"needs compute capability {need[0]}.{need[1]}+, the GPU has {have[0]}.{have[1]}")
    if dtype not in backend.dtypes:
        reasons.append(f"does not compute in {dtype.value} (supports {', '.join(d.value for d in backend.dtypes)})")
    return tuple(reasons)
