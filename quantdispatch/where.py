"""Could a checkpoint load there? Its plan on hand-built machines (a CPU; Turing, Ampere, Ada, Hopper,
Blackwell GPUs) with every declared backend's packages installed, and what Transformers, vLLM and
llama.cpp would do there (``quantdispatch.engines``, with the source of each fact).

Pure: the environments are values, so the answers hold without the GPUs.
"""

from __future__ import annotations

from typing import Final

import attrs

from .backend import Refusal
from .configs.base import AbstractQuantConfig
from .engine import vllm_args
from .engines import EngineAnswer, device_name, llama_cpp_answer, transformers_answer, vllm_answer
from .environment import Cpu, Cuda, Environment, Package, Version
from .plan import LoadOptions, plan
from .result import Err
from .rules import backends

__all__ = ["GPUS", "MACHINES", "Verdict", "full_environment", "verdicts", "engine_answers", "quantdispatch_answer"]

GPUS: Final[tuple[Cuda, ...]] = (
    Cuda(capability=(7, 5), name="Turing (T4)"), Cuda(capability=(8, 0), name="Ampere (A100)"),
    Cuda(capability=(8, 9), name="Ada (L40S)"), Cuda(capability=(9, 0), name="Hopper (H100)"),
    Cuda(capability=(10, 0), name="Blackwell (B200)"),
)
MACHINES: Final[tuple[Cpu | Cuda, ...]] = (Cpu(), *GPUS)
"""The CPU, then each GPU generation: the devices ``where`` answers for."""


def full_environment(device: Cpu | Cuda) -> Environment:
    """A machine with ``device`` and every package any declared backend requires, at a version each accepts."""
    wanted: dict[str, str] = {}
    for b in backends():
        for r in b.requires:
            v = r.minimum or "1.0"
            if Version.parse(v) >= Version.parse(wanted.get(r.package, "0")):
                wanted[r.package] = v
    devices = (Cpu(),) if isinstance(device, Cpu) else (Cpu(), device)
    return Environment(packages=tuple(Package(n, Version.parse(v)) for n, v in sorted(wanted.items())), devices=devices)


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


def quantdispatch_answer(config: AbstractQuantConfig, device: Cpu | Cuda) -> EngineAnswer:
    """quantdispatch's own answer on ``device``: the backend its plan picks, or every reason none fits."""
    made = plan(config, full_environment(device), LoadOptions(device="cpu" if isinstance(device, Cpu) else "cuda"))
    if isinstance(made, Err):
        return EngineAnswer(engine="quantdispatch", device=device_name(device), status="refuses",
                            reason="; ".join(i.message for i in made.error), source="quantdispatch.plan")
    p = made.value
    return EngineAnswer(engine="quantdispatch", device=device_name(device), status="runs", how=p.backend.name,
                        source="quantdispatch.plan")


def engine_answers(config: AbstractQuantConfig, machines: tuple[Cpu | Cuda, ...] = MACHINES) -> tuple[EngineAnswer, ...]:
    """Every engine's answer for ``config`` on each machine: quantdispatch, Transformers, vLLM, llama.cpp.

    >>> from quantdispatch import FbgemmFp8
    >>> [(a.engine, a.status) for a in engine_answers(FbgemmFp8(), (Cpu(),))][:2]
    [('quantdispatch', 'runs'), ('transformers', 'refuses')]
    """
    return tuple(answer(config, m) for m in machines for answer in (quantdispatch_answer, transformers_answer, vllm_answer, llama_cpp_answer))
