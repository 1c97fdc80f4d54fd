"""Could a checkpoint load there? Its plan on hand-built CUDA machines (Turing, Ampere, Ada, Hopper,
Blackwell) with every declared backend's packages installed, and what vLLM would say.

Pure: the environments are values, so the answers hold without the GPUs.
"""

from __future__ import annotations

from typing import Final

import attrs

from .backend import Refusal
from .configs.base import AbstractQuantConfig
from .engine import vllm_args
from .environment import Cpu, Cuda, Environment, Package, Version
from .plan import LoadOptions, plan
from .result import Err
from .rules import backends

__all__ = ["GPUS", "Verdict", "full_environment", "verdicts"]

GPUS: Final[tuple[Cuda, ...]] = (
    Cuda(capability=(7, 5), name="Turing (T4)"), Cuda(capability=(8, 0), name="Ampere (A100)"),
    Cuda(capability=(8, 9), name="Ada (L40S)"), Cuda(capability=(9, 0), name="Hopper (H100)"),
    Cuda(capability=(10, 0), name="Blackwell (B200)"),
)


def full_environment(device: Cuda) -> Environment:
    """A machine with ``device`` and every package any declared backend requires, at a version each accepts."""
    wanted: dict[str, str] = {}
    for b in backends():
        for r in b.requires:
            v = r.minimum or "1.0"
            if Version.parse(v) >= Version.parse(wanted.get(r.package, "0")):
                wanted[r.package] = v
    return Environment(packages=tuple(Package(n, Version.parse(v)) for n, v in sorted(wanted.items())), devices=(Cpu(), device))


@attrs.frozen
class Verdict:
    """What happens to a config on one machine: the backend a plan picks (or why none), and vLLM's answer."""

    machine: str
    backend: str | None
    why_not: tuple[str, ...]
    vllm: str


def verdicts(config: AbstractQuantConfig, machines: tuple[Cuda, ...] = GPUS) -> tuple[Verdict, ...]:
    """The verdict for ``config`` on each machine."""
    out = []
    for gpu in machines:
        made = plan(config, full_environment(gpu), LoadOptions(device="cuda"))
        engine = vllm_args(config, gpu, allow_deprecated=True)
        said = engine.message if isinstance(engine, Refusal) else " ".join(engine.as_cli())
        if isinstance(made, Err):
            out.append(Verdict(gpu.name, None, tuple(i.message for i in made.error), said))
        else:
            p = made.value
            out.append(Verdict(gpu.name, p.backend.name, tuple(f"{r.backend}: {'; '.join(r.reasons)}" for r in p.rejected), said))
    return tuple(out)
