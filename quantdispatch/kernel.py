"""Kernels as registered values: what computes with a layout on a device.

A ``Kernel`` names no method. It declares the layouts it serves (layout types, and the input
form it reads from them: ``"int4"`` for the int4 kernels, any layout that converts to it), what it
needs (packages, devices, dtypes), a fit rule dispatched on (layout type, device type) that says
why it cannot take a given layout here, and a lazy reference to its ``prepare``: the function that
turns a loaded portable module into the kernel's own module (repacking once), or ``None`` to keep
the portable module. The planner sees each kernel as a ``Backend`` of the same name; the loader
is the one load path (``quantdispatch.loading.layered``).

``kernel_candidates`` ranks the kernels serving a layout on a device, in one place, for every
method: GPTQ, AWQ and compressed-tensors reach ``cpu-int4``, ``cpu-q4`` and ``cpu-q4-q8dot`` through it.

>>> from quantdispatch.layouts import GptqPacked
>>> from quantdispatch.environment import Cpu, CpuFeatures
>>> cpu = Cpu(features=CpuFeatures(avx2=True, fma=True))
>>> [c.backend.name for c in kernel_candidates(GptqPacked(bits=4, group_size=128, v1=True), cpu)]
['cpu-q4-q8dot', 'cpu-q4', 'cpu-int4', 'cpu-dense', 'torch-packed']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import attrs

from .backend import Backend, Candidate, DeviceKind, Requirement
from .configs.base import AbstractQuantConfig
from .dtypes import DType
from .environment import AbstractDevice, Cpu, Cuda, Mps
from .layouts.base import AbstractIntLayout, AbstractLayout, Lazy
from .layouts.compressed_tensors import CtIntQuantized
from .layouts.fp8 import AbstractFp8Layout
from .layouts.gptq import GptqPacked
from .layouts.mxfp4 import Mxfp4Experts
from .rules import RegistrationError, _is_subclass, _Table, declare_backend

__all__ = [
    "Kernel", "FitRule", "Rank", "Prepare", "LAYERED_LOADER", "register_kernel", "kernels", "kernel_named", "kernel_candidates",
    "device_kind", "Renamed", "declare_renamed", "renamed", "renames", "TORCH", "TORCH_INT4_CPU", "ATEN_INT4_GROUPS",
    "cpu_int4_unfit", "cpu_q4_unfit", "TORCH_PACKED", "CPU_INT4", "CPU_Q4", "CPU_Q4_Q8DOT", "CPU_DENSE", "CPU_INT8", "CPU_FP8", "CPU_FP4",
    "CPU_FP4_EXPERTS",
]

Prepare = Callable[[Any, AbstractLayout, Any], Any]
"""``prepare(portable module, layout, torch dtype)``: the kernel's module for one loaded layer, or
``None`` to keep the portable one (a layer the kernel cannot take)."""

LAYERED_LOADER: Final = "quantdispatch.loading.layered:load"
"""The one loader every kernel's backend names: source → check → skeleton → portable modules →
stream → ``prepare`` → tie → place."""

L = TypeVar("L", bound=AbstractLayout)
D = TypeVar("D", bound=AbstractDevice)


FitImpl = Callable[[L, D], tuple[str, ...]]


def device_kind(device: AbstractDevice) -> DeviceKind:
    """The kind of a device, as backends declare where they run."""
    return "cuda" if isinstance(device, Cuda) else "mps" if isinstance(device, Mps) else "cpu"


def _fits_anything(layout: AbstractLayout, device: AbstractDevice, /) -> tuple[str, ...]:
    """Return every reason the kernel cannot take this layout on this device (empty: it can)."""
    return ()


class FitRule:
    """A kernel's fit rule, dispatched on (layout type, device type); total through its fallback."""

    def __init__(self, name: str) -> None:
        self._table = _Table(f"{name}.fit", _fits_anything)

    def __call__(self, layout: AbstractLayout, device: AbstractDevice, /) -> tuple[str, ...]:
        key = (type(layout), type(device))
        impl = self._table._cache.get(key) or self._table.resolve(key, (layout, device))
        found: tuple[str, ...] = impl(layout, device)
        return found

    def register(self, layout_type: type[L], device_type: type[D]) -> Callable[[FitImpl[L, D]], FitImpl[L, D]]:
        """Decorate the fit rule for ``(layout_type, device_type)``.

        Raises:
            RegistrationError: A type of the wrong kind, or a duplicate or ambiguous signature.
        """
        if not _is_subclass(layout_type, AbstractLayout) or not _is_subclass(device_type, AbstractDevice):
            raise RegistrationError(f"a fit rule takes a layout type and a device type, not {layout_type!r}, {device_type!r}")

        def decorator(impl: FitImpl[L, D]) -> FitImpl[L, D]:
            self._table.add(impl, (layout_type, device_type))
            return impl

        return decorator

    def __repr__(self) -> str:
        return f"FitRule({self._table.name})"


@attrs.frozen
class Rank:
    """Where a kernel comes among those serving a layout (lower first): ``default``, or
    ``native_bf16`` on a CPU that computes bfloat16 natively (AVX512-BF16/AMX)."""

    default: int
    native_bf16: int | None = None

    def __call__(self, device: AbstractDevice) -> int:
        if self.native_bf16 is not None and isinstance(device, Cpu) and device.features.native_bf16:
            return self.native_bf16
        return self.default


@attrs.frozen(kw_only=True)
class Kernel:
    """A registered kernel.

    Attributes:
        name: Stable identifier, naming no method (``cpu-int4``); its backend has the same name.
        summary: One line saying what it computes and how.
        layouts: The layout types it serves.
        takes: The input form it reads from a layout (``layout.forms``); ``None``: the portable module.
        prepare: The lazily imported ``Prepare``; ``None`` keeps the portable module.
        requires, devices, min_capability, dtypes: As for a ``Backend``.
        rank: Its place among the kernels serving a layout.
        fit: Its fit rule on (layout, device); register implementations on it.
    """

    name: str
    summary: str
    layouts: tuple[type[AbstractLayout], ...]
    takes: str | None = None
    prepare: Lazy[Prepare] | None = None
    requires: tuple[Requirement, ...] = ()
    devices: tuple[DeviceKind, ...] = ("cpu", "cuda")
    min_capability: tuple[int, int] | None = None
    dtypes: tuple[DType, ...] = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16)
    rank: Rank = Rank(50)
    fit: FitRule = attrs.field(eq=False, repr=False, default=attrs.Factory(lambda self: FitRule(self.name), takes_self=True))

    @property
    def backend(self) -> Backend:
        """The backend the planner sees: this kernel's name and needs, loaded by the one load path."""
        return Backend(name=self.name, summary=self.summary, requires=self.requires, devices=self.devices,
                       min_capability=self.min_capability, dtypes=self.dtypes, loader=LAYERED_LOADER)

    def serves(self, layout: AbstractLayout) -> bool:
        """Whether this kernel computes with ``layout``: a served type, loadable into a portable
        module, and convertible to the form the kernel reads."""
        return (isinstance(layout, self.layouts) and type(layout).portable is not None
                and (self.takes is None or self.takes in type(layout).forms))


_KERNELS: dict[str, Kernel] = {}


def register_kernel(kernel: Kernel) -> Kernel:
    """Make a kernel known: the planner offers it for every layout it serves.

    Raises:
        RegistrationError: Not a ``Kernel``, a name taken by another kernel or backend, a served
            type that is not a layout, or a ``prepare`` that is not a ``Lazy`` reference.
    """
    if not isinstance(kernel, Kernel):
        raise RegistrationError(f"{kernel!r} is not a Kernel")
    if kernel.name in _KERNELS:
        raise RegistrationError(f"a kernel named {kernel.name!r} is already registered; pick another name")
    bad = [t for t in kernel.layouts if not _is_subclass(t, AbstractLayout)]
    if bad or not kernel.layouts:
        raise RegistrationError(f"kernel {kernel.name!r} must serve layout types, got {kernel.layouts!r}")
    if kernel.prepare is not None and not isinstance(kernel.prepare, Lazy):
        raise RegistrationError(f"kernel {kernel.name!r}: prepare must be a Lazy reference or None, got {kernel.prepare!r}")
    declare_backend(kernel.backend)
    _KERNELS[kernel.name] = kernel
    return kernel


def kernels() -> tuple[Kernel, ...]:
    """Every registered kernel, in registration order."""
    return tuple(_KERNELS.values())


def kernel_named(name: str) -> Kernel | None:
    """The registered kernel of that name, or ``None``."""
    return _KERNELS.get(name)


def kernel_candidates(layout: AbstractLayout | None, device: AbstractDevice) -> tuple[Candidate, ...]:
    """The kernels serving ``layout`` that run on ``device``'s kind, best first, each with the
    reasons its fit rule gives (empty: it fits)."""
    if layout is None:
        return ()
    kind = device_kind(device)
    found = [k for k in _KERNELS.values() if kind in k.devices and k.serves(layout)]
    found.sort(key=lambda k: k.rank(device))  # stable: registration order breaks ties
    return tuple(Candidate(k.backend, k.fit(layout, device)) for k in found)


# ------------------------------------------------------------------------------ renamed backends
@attrs.frozen
class Renamed:
    """A backend name users passed before kernels lost their method: ``old`` meant ``new`` for
    configs of ``config_type``."""

    old: str
    new: str
    config_type: type[AbstractQuantConfig]


_RENAMED: dict[str, Renamed] = {}


def declare_renamed(old: str, new: str, config_type: type[AbstractQuantConfig]) -> Renamed:
    """Keep an old backend name working for one method's configs.

    Raises:
        RegistrationError: ``old`` is declared already.
    """
    if old in _RENAMED:
        raise RegistrationError(f"the old backend name {old!r} is already declared")
    _RENAMED[old] = entry = Renamed(old, new, config_type)
    return entry


def renamed(name: str, config: AbstractQuantConfig) -> Renamed | None:
    """What an old backend name means for this config (``None``: it is not an old name for it)."""
    entry = _RENAMED.get(name)
    return entry if entry is not None and isinstance(config, entry.config_type) else None


def renames() -> tuple[Renamed, ...]:
    """Every declared old name."""
    return tuple(_RENAMED.values())


# ------------------------------------------------------------------------------ built-in kernels
TORCH: Final = Requirement("torch", "2.4")
TORCH_INT4_CPU: Final = Requirement("torch", "2.6")
"""``aten._weight_int4pack_mm_for_cpu`` and its packing op (added in torch 2.6)."""
ATEN_INT4_GROUPS: Final = (32, 64, 128, 256)
"""Group sizes torch's CPU int4 kernel takes; a group size that is a multiple of one (or -1)
maps onto it exactly by repeating each scale."""


def cpu_int4_unfit(bits: int, group_size: int, device: Cpu) -> tuple[str, ...]:
    """Why torch's CPU int4 kernel cannot take weights of this width and group size on this CPU
    (empty: it can). Per-layer shapes (out_features % 16, in_features a multiple of the group)
    are checked when each layer is prepared; a layer that does not fit keeps the portable module."""
    reasons = []
    if bits != 4:
        reasons.append(f"the aten int4 kernel takes 4-bit weights, not {bits}-bit")
    if group_size != -1 and (group_size <= 0 or group_size % ATEN_INT4_GROUPS[0]):
        shown = group_size if abs(group_size) < 10**12 else "a huge number"
        reasons.append(f"the aten int4 kernel takes groups of {list(ATEN_INT4_GROUPS)} inputs (or multiples, or -1), not {shown}")
    if not device.features.vector_int4:
        reasons.append("the aten int4 kernel is vectorized for AVX2/AVX-512 only, and this CPU reports neither")
    return tuple(reasons)


def cpu_q4_unfit(bits: int, group_size: int, device: Cpu) -> tuple[str, ...]:
    """Why quantdispatch's native int4 kernel (C, AVX2 + FMA at least) cannot take these weights here."""
    reasons = [r.replace("the aten int4 kernel", "the native int4 kernel") for r in cpu_int4_unfit(bits, group_size, device)
               if "vectorized" not in r]
    if not (device.features.avx2 and device.features.fma):
        reasons.append("the native int4 kernel needs AVX2 and FMA, and this CPU does not report both")
    return tuple(reasons)


TORCH_PACKED = register_kernel(Kernel(
    name="torch-packed", summary="quantdispatch's portable torch modules: the stored packed tensors as buffers, "
    "dequantized per group (or once, with dequantize_at_load) and multiplied",
    layouts=(AbstractLayout,), requires=(TORCH,), devices=("cpu", "cuda", "mps"), min_capability=(6, 0), rank=Rank(90),
))
CPU_INT4 = register_kernel(Kernel(
    name="cpu-int4", summary="torch's CPU int4 kernel on bf16 activations: weights repacked once at load, act-order "
    "folded into the packing (layers it cannot take keep the portable module)",
    layouts=(AbstractIntLayout,), takes="int4", prepare=Lazy("quantdispatch.backends.cpu_int4", "prepare_int4"),
    requires=(TORCH_INT4_CPU,), devices=("cpu",), dtypes=(DType.BFLOAT16, DType.FLOAT32), rank=Rank(11),
))
CPU_Q4 = register_kernel(Kernel(
    name="cpu-q4", summary="quantdispatch's native int4 kernel (C, AVX-512 or AVX2+FMA, OpenMP threads, float32 "
    "accumulation; bf16 activations multiplied exactly with AVX512-BF16): codes read once per decode step, blocks "
    "dequantized in cache for prefill (a bf16 GEMM for bf16 activations on native-bf16 CPUs); repacked once at load",
    layouts=(AbstractIntLayout,), takes="int4", prepare=Lazy("quantdispatch.backends.cpu_int4", "prepare_q4"),
    requires=(TORCH,), devices=("cpu",), dtypes=(DType.BFLOAT16, DType.FLOAT32), rank=Rank(10),
))
"""First wherever it fits, AVX512-BF16 CPUs included: there its bf16 decode (vdpbf16ps, exact products)
measured 1.1-1.5x faster than torch's int4 kernel on bf16 activations on one thread and about as fast
on two (4096x4096 and 2048x8192, g128, ``benchmarks/bench_layer_kernels.py``), its bf16 prefill at
512 rows ~2x, and its scales and offsets stay float32 where torch's are rounded to bf16."""
CPU_Q4_Q8DOT = register_kernel(Kernel(
    name="cpu-q4-q8dot", summary="quantdispatch's int8-activation int4 kernel (C, AVX512-VNNI, AVX-512 or AVX2, OpenMP "
    "threads): codes repacked once at load into 16-row groups; activations rounded to int8 per 32 columns, exact "
    "integer dot products and float32 scales (llama.cpp's arithmetic), at decode and prefill alike",
    layouts=(AbstractIntLayout,), takes="int4", prepare=Lazy("quantdispatch.kernels.int4_q8dot", "prepare_q4q8"),
    requires=(TORCH,), devices=("cpu",), dtypes=(DType.BFLOAT16, DType.FLOAT32), rank=Rank(9),
))
"""First wherever it fits (AVX2 + FMA): its decode read the codes at 70-96 % of the copy bandwidth with AVX512-VNNI
(1.5-1.6x torch's int4 kernel on one thread, 4096x4096 and 2048x8192 g128, ``benchmarks/bench_layer_kernels.py``;
about 1.7x ``cpu-q4`` with float32 activations), and its prefill, the same integer loop, measured 2-4.6x a float32
dense layer at 32 and 512 rows, at the cost of an int8 rounding of the activations (~0.5 % of a layer's output,
5-7 % of a 4-bit model's quantization error on its logits); ``cpu-q4`` stays the float32-exact choice."""
CPU_DENSE = register_kernel(Kernel(
    name="cpu-dense", summary="8-bit weights dequantized once at load from their group scales into a dense weight "
    "(one rounding to the compute dtype); a dense matmul per call",
    layouts=(GptqPacked, CtIntQuantized), prepare=Lazy("quantdispatch.backends.cpu_int4", "prepare_dense"),
    requires=(TORCH,), devices=("cpu",), dtypes=(DType.BFLOAT16, DType.FLOAT32), rank=Rank(20),
))

CPU_INT8 = register_kernel(Kernel(
    name="cpu-int8", summary="8-bit weights kept as stored on torch's int8 CPU kernel (_weight_int8pack_mm, bf16 "
    "activations, one scale per output row): the bytes read in place per decode step, blocks dequantized to bf16 for "
    "prefill; layers it cannot take are made dense at load",
    layouts=(CtIntQuantized,), prepare=Lazy("quantdispatch.kernels.int8", "prepare_int8"),
    requires=(TORCH,), devices=("cpu",), dtypes=(DType.BFLOAT16,), rank=Rank(15),
))
"""Before ``cpu-dense`` where it fits: symmetric per-row int8 weights on a CPU with native bfloat16,
where it measured ~3x a bf16 dense matmul at decode and keeps the checkpoint's bytes (a quarter of
float32's); with float32 activations torch's kernel was ~10x slower than dense, so it is not planned."""

CPU_FP8 = register_kernel(Kernel(
    name="cpu-e4m3", summary="quantdispatch's native FP8 kernel (C, AVX-512 or AVX2+F16C+FMA where present, OpenMP "
    "threads, float32 accumulation): "
    "e4m3 bytes read in place once per decode step, blocks dequantized in cache for prefill (layers it cannot take, or "
    "a machine without a C compiler, keep the portable module)",
    layouts=(AbstractFp8Layout,), takes="fp8", prepare=Lazy("quantdispatch.backends.cpu_fp8", "prepare_fp8"),
    requires=(TORCH,), devices=("cpu",), rank=Rank(30),
))
CPU_FP4 = register_kernel(Kernel(
    name="cpu-fp4", summary="quantdispatch's native NVFP4 kernel (C, AVX-512 or AVX2 table lookups where present, OpenMP "
    "threads, float32 sums): E2M1 codes read in place per decode step with their E4M3 block scales as stored (times or "
    "over the float32 tensor scale per block of 16), blocks dequantized in cache for prefill",
    layouts=(AbstractLayout,), takes="nvfp4", prepare=Lazy("quantdispatch.kernels.fp4_native", "prepare_fp4"),
    requires=(TORCH,), devices=("cpu",), dtypes=(DType.BFLOAT16, DType.FLOAT32), rank=Rank(30),
))

CPU_FP4_EXPERTS = register_kernel(Kernel(
    name="cpu-fp4-experts", summary="quantdispatch's native MXFP4 experts kernel (C, float32 sums, the cpu-fp4 library): each "
    "picked expert's E2M1 codes and E8M0 scale bytes read in place per call, blocks dequantized in cache for many tokens "
    "(a machine without a C compiler keeps the portable module)",
    layouts=(Mxfp4Experts,), prepare=Lazy("quantdispatch.kernels.mxfp4", "prepare_mxfp4"),
    requires=(TORCH,), devices=("cpu",), dtypes=(DType.BFLOAT16, DType.FLOAT32), rank=Rank(30),
))


@CPU_FP4_EXPERTS.fit.register(Mxfp4Experts, Cpu)
def _fp4_experts_fit(layout: Mxfp4Experts, device: Cpu, /) -> tuple[str, ...]:
    return ("dequantize is set: the experts are dequantized at load (torch-packed)",) if layout.dense_at_load else ()


@CPU_INT4.fit.register(AbstractIntLayout, Cpu)
def _int4_fit(layout: AbstractIntLayout, device: Cpu, /) -> tuple[str, ...]:
    return cpu_int4_unfit(layout.bits, layout.group_size, device)


@CPU_Q4.fit.register(AbstractIntLayout, Cpu)
def _q4_fit(layout: AbstractIntLayout, device: Cpu, /) -> tuple[str, ...]:
    return cpu_q4_unfit(layout.bits, layout.group_size, device)


@CPU_Q4_Q8DOT.fit.register(AbstractIntLayout, Cpu)
def _q4q8_fit(layout: AbstractIntLayout, device: Cpu, /) -> tuple[str, ...]:
    return tuple(r.replace("native int4 kernel", "int8-activation int4 kernel") for r in cpu_q4_unfit(layout.bits, layout.group_size, device))


@CPU_INT8.fit.register(CtIntQuantized, Cpu)
def _int8_fit(layout: CtIntQuantized, device: Cpu, /) -> tuple[str, ...]:
    reasons = []
    if not device.features.native_bf16:
        reasons.append("torch's int8 kernel is fast only with bfloat16 activations on a CPU with native bfloat16 (AVX512-BF16/AMX)")
    if not layout.symmetric:
        reasons.append("zero points are stored: torch's int8 kernel takes symmetric weights")
    if layout.strategy != "channel":
        reasons.append(f"one scale per {layout.strategy}: torch's int8 kernel takes one scale per output row")
    return tuple(reasons)


@CPU_DENSE.fit.register(AbstractIntLayout, Cpu)
def _dense_fit(layout: AbstractIntLayout, device: Cpu, /) -> tuple[str, ...]:
    return () if layout.bits == 8 else (f"keeps 8-bit weights dense; {layout.bits}-bit ones stay packed",)
