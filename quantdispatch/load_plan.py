"""What a load plan is made of: the caller's ``LoadOptions``, the device a request names in an
environment (``resolve_device``), and the resulting ``LoadPlan`` with the backends it rejected.

Both planners use these: ``plan`` for a registered method and ``plan_unknown`` for a method string
nobody registered; ``quantdispatch.plan`` re-exports the public names.
"""

from __future__ import annotations

import re
from typing import Literal

import attrs

from .backend import Backend
from .configs.base import AbstractQuantConfig
from .dtypes import DType
from .environment import AbstractDevice, Cpu, Environment, Mps
from .layouts import AbstractLayout, layout_of
from .result import Issue
from .text import printable, quote

__all__ = ["RANKED_BELOW", "DeviceRequest", "LoadOptions", "LoadPlan", "Rejection", "resolve_device"]

RANKED_BELOW = "usable, but ranked below the chosen backend"
"""The reason given for a backend that could run but lost to a preferred one."""

DeviceRequest = Literal["auto", "cpu", "cuda", "mps"] | str


@attrs.frozen(kw_only=True)
class LoadOptions:
    """What the caller asks for.

    Attributes:
        device: ``"auto"`` (the first GPU, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        dtype: The compute dtype; ``None`` lets the plan choose.
        backend: Force a backend by name; the others are reported as not requested.
        user_config: A config passed by the user, reconciled with the checkpoint's.
        executable: Only backends this version can execute (a ``loader``) may be chosen; ``load``
            plans so. Others are rejected with that reason.
        unknown_method: What to do with a checkpoint whose method nobody registered
            (``UnknownMethod``): ``"refuse"`` (the default), or ``"full_precision"``: load the
            weights as stored, ignoring the quantization config, deliberately (the plan says so).
    """

    device: DeviceRequest = "auto"
    dtype: DType | None = None
    backend: str | None = None
    user_config: AbstractQuantConfig | None = None
    executable: bool = False
    unknown_method: Literal["refuse", "full_precision"] = "refuse"


@attrs.frozen
class Rejection:
    """A backend that was considered and not chosen, with every reason."""

    backend: str
    reasons: tuple[str, ...]


@attrs.frozen(kw_only=True)
class LoadPlan:
    """Everything ``execute`` needs, and why.

    Attributes:
        config: The config to load.
        pre_quantized: Whether weights on disk are already quantized.
        device: Where the model goes.
        dtype: The compute dtype.
        backend: The chosen backend.
        rejected: Backends considered and not chosen, with reasons.
        skip_modules: Module patterns left unquantized (``None``: the defaults: tied and output
            embeddings).
        overrides: Loading attributes taken from the user's config.
        notes: Every other decision, in plain words.
    """

    config: AbstractQuantConfig
    pre_quantized: bool
    device: AbstractDevice
    dtype: DType
    backend: Backend
    rejected: tuple[Rejection, ...] = ()
    skip_modules: tuple[str, ...] | None = None
    overrides: tuple[tuple[str, object], ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def layout(self) -> AbstractLayout | None:
        """How the checkpoint stores its quantized layers (``layout_of`` the config), if it is a layout the shell loads layer by layer."""
        return layout_of(self.config)

    def explain(self) -> str:
        """The plan in plain words, one decision per line."""
        lines = [
            f"config:   {type(self.config).__name__} ({'pre-quantized checkpoint' if self.pre_quantized else 'quantize while loading'})",
            f"device:   {self.device.label}",
            f"dtype:    {self.dtype.value}",
            f"backend:  {self.backend.name} — {self.backend.summary}",
        ]
        layout = self.layout
        if layout is not None:
            lines.insert(1, f"layout:   {layout.describe()}")
        for r in self.rejected:
            label = "fallback" if r.reasons == (RANKED_BELOW,) else "rejected"
            lines.append(f"{label}: {r.backend}: {'; '.join(r.reasons)}")
        skip = "default (output and tied embeddings)" if self.skip_modules is None else ", ".join(self.skip_modules) or "none"
        lines.append(f"skipped:  {skip}")
        lines += [f"override: {k} = {quote(v)}" for k, v in self.overrides]
        lines += [f"note:     {n}" for n in self.notes]
        return "\n".join(printable(line) for line in lines)  # a module name cannot forge a line


_CUDA = re.compile(r"cuda(?::(0|[1-9][0-9]{0,3}))?")


def resolve_device(request: object, env: Environment) -> AbstractDevice | Issue:
    """The device of ``env`` that ``request`` names (``LoadOptions.device``), or the issue saying why none:
    ``auto`` is the first CUDA GPU, else an MPS device, else the CPU."""
    cudas = env.cuda()
    cpu = next((d for d in env.devices if isinstance(d, Cpu)), Cpu())  # the environment's, with its features
    if not isinstance(request, str):
        return Issue("plan.device.type", "$.device", f"expected a device name, got {type(request).__name__} {quote(request)}",
                     "use auto, cpu, cuda, cuda:N or mps")
    if request == "auto":
        return cudas[0] if cudas else next((d for d in env.devices if isinstance(d, Mps)), cpu)
    if request == "cpu":
        return cpu
    if request == "mps":
        found = next((d for d in env.devices if isinstance(d, Mps)), None)
        return found or Issue("plan.device.unavailable", "$.device", "no MPS device in this environment")
    m = _CUDA.fullmatch(request)
    if m is not None:
        index = m.group(1)
        match = [d for d in cudas if index is None or d.index == int(index)]
        return match[0] if match else Issue("plan.device.unavailable", "$.device", f"no {request} device in this environment",
                                            "use device='cpu', or run where torch sees a CUDA GPU")
    return Issue("plan.device.unknown", "$.device", f"unknown device {quote(request)}", "use auto, cpu, cuda, cuda:N or mps")
