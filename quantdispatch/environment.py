"""The environment as a value: packages, versions and devices.

``Environment`` is frozen data; ``probe()`` (in ``quantdispatch.probing``) builds one from the running
process, and tests build them by hand to exercise GPU decisions on a CPU-only machine:

>>> env = Environment(packages=(Package("bitsandbytes", Version.parse("0.50.2")),),
...                   devices=(Cpu(), Cuda(index=0, capability=(8, 0), name="A100")))
>>> env.version_of("bitsandbytes")
Version(parts=(0, 50, 2), text='0.50.2')
>>> env.cuda()[0].capability
(8, 0)
"""

from __future__ import annotations

import re
from typing import Final

import attrs

__all__ = ["Version", "Package", "CpuFeatures", "MASK_VARIABLE", "FEATURE_NAMES", "AbstractDevice", "Cpu", "Cuda", "Mps", "Environment"]


@attrs.frozen(order=False)
class Version:
    """A package version: its leading numeric release parts, and the text it was read from.

    Pre-release and local tags (``rc1``, ``+cpu``) are kept in ``text`` but not compared.
    """

    parts: tuple[int, ...]
    text: str = ""
    _key: tuple[int, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Trailing zeros do not count (2.4 == 2.4.0); computed once, compared often.
        parts = list(self.parts)
        while parts and parts[-1] == 0:
            parts.pop()
        object.__setattr__(self, "_key", tuple(parts))

    @classmethod
    def parse(cls, text: str) -> Version:
        """Read ``"2.13.0+cpu"`` as ``(2, 13, 0)``; text with no leading number gives ``()``."""
        match = re.match(r"\d+(?:\.\d+)*", text.strip())
        parts = tuple(int(p) for p in match.group(0).split(".")) if match else ()
        return cls(parts, text)

    def __lt__(self, other: Version) -> bool:
        return self._key < other._key

    def __ge__(self, other: Version) -> bool:
        return not self < other

    def __str__(self) -> str:
        return self.text or ".".join(map(str, self.parts))


@attrs.frozen
class Package:
    """An installed distribution and its version."""

    name: str
    version: Version


@attrs.frozen
class AbstractDevice:
    """Base of the device kinds that backends are dispatched on."""

    @property
    def label(self) -> str:
        """The torch device string (``cpu``, ``cuda:0``, ``mps``)."""
        raise NotImplementedError


@attrs.frozen(kw_only=True)
class CpuFeatures:
    """The instruction-set extensions of the host CPU that kernels are chosen by.

    ``probe()`` reads them once (``/proc/cpuinfo`` flags, else torch's CPU capability); a
    hand-built ``CpuFeatures()`` knows of none, so plans made for it stay on portable kernels.

    Attributes:
        avx2: 256-bit integer SIMD (``avx2``): torch's int4 CPU kernel has a vectorized path.
        fma: Fused multiply-add (``fma``): with AVX2, what quantdispatch's native int4 kernel needs.
        avx512: AVX-512 foundation (``avx512f``).
        avx512_bf16: Native bfloat16 dot products (``avx512_bf16``): bf16 matmuls are fast.
        avx512_vnni: 8-bit integer dot products on AVX-512 (``avx512_vnni``): the native kernels'
            8-bit-activation paths use them.
        amx: Advanced Matrix Extensions with bf16 tiles (``amx_bf16``).
        hidden: Features the CPU has that a mask (``masked``) removed, as ``/proc/cpuinfo`` spells them.
        mask: The mask's text when one was applied (``QUANTDISPATCH_CPU_FEATURES``), else ``None``.

    >>> CpuFeatures(avx2=True, avx512=True, avx512_bf16=True).native_bf16, CpuFeatures().native_bf16
    (True, False)
    """

    avx2: bool = False
    fma: bool = False
    avx512: bool = False
    avx512_bf16: bool = False
    amx: bool = False
    avx512_vnni: bool = False
    hidden: tuple[str, ...] = ()
    mask: str | None = None

    @property
    def native_bf16(self) -> bool:
        """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX), so bf16 beats float32."""
        return self.avx512_bf16 or self.amx

    @property
    def vector_int4(self) -> bool:
        """Whether torch's int4 CPU kernel has a vectorized path here (AVX2 or AVX-512)."""
        return self.avx2 or self.avx512

    def names(self) -> tuple[str, ...]:
        """The extensions present, as ``/proc/cpuinfo`` spells them."""
        flags = (("avx2", self.avx2), ("fma", self.fma), ("avx512f", self.avx512), ("avx512_bf16", self.avx512_bf16), ("amx_bf16", self.amx),
                 ("avx512_vnni", self.avx512_vnni))
        return tuple(name for name, present in flags if present)

    def masked(self, spec: str) -> CpuFeatures:
        """These features less those ``spec`` does not name: a mask only removes, never adds.

        ``spec`` is ``"none"``, or names separated by commas as ``/proc/cpuinfo`` spells them
        (``FEATURE_NAMES``); a feature whose prerequisite is masked goes too (AVX512-BF16 and
        AVX512-VNNI need AVX-512). Names it does not know are ignored (they are kept in ``mask``, which
        ``Environment.summary`` prints). An empty ``spec`` or ``"native"`` masks nothing.

        >>> host = CpuFeatures(avx2=True, fma=True, avx512=True, avx512_bf16=True)
        >>> host.masked("avx2,fma").names(), host.masked("avx2,fma").hidden
        (('avx2', 'fma'), ('avx512f', 'avx512_bf16'))
        >>> host.masked("none").names(), host.masked("avx512_bf16").names()
        ((), ())
        >>> CpuFeatures().masked("avx2,fma").names()   # never adds
        ()
        """
        text = spec.strip().lower()
        if text in ("", "native"):
            return self
        keep = set() if text == "none" else {n.strip() for n in text.split(",")}
        present = set(self.names())
        kept = {n for n in present if n in keep}
        if "avx512f" not in kept:
            kept.discard("avx512_bf16")
            kept.discard("avx512_vnni")
        order = self.names()
        return CpuFeatures(avx2="avx2" in kept, fma="fma" in kept, avx512="avx512f" in kept, avx512_bf16="avx512_bf16" in kept,
                           amx="amx_bf16" in kept, avx512_vnni="avx512_vnni" in kept,
                           hidden=(*self.hidden, *(n for n in order if n not in kept)), mask=spec[:200])

    def describe(self) -> str:
        """One line: the features, and the mask with what it hid when one is active.

        >>> CpuFeatures(avx2=True, fma=True, avx512=True).masked("avx2").describe()
        "avx2 (masked by QUANTDISPATCH_CPU_FEATURES='avx2', hiding fma, avx512f)"
        """
        shown = ", ".join(self.names()) or "no SIMD features known"
        if self.mask is None:
            return shown
        unknown = sorted({n.strip() for n in self.mask.lower().split(",")} - set(FEATURE_NAMES) - {"none", "native", ""})
        hiding = ", ".join(self.hidden) or "nothing"
        note = f"; unknown names ignored: {', '.join(repr(n[:40]) for n in unknown[:8])}" if unknown else ""
        return f"{shown} (masked by {MASK_VARIABLE}={self.mask!r}, hiding {hiding}{note})"


MASK_VARIABLE: Final = "QUANTDISPATCH_CPU_FEATURES"
"""The environment variable that masks the probed CPU features for a process (``CpuFeatures.masked``)."""

FEATURE_NAMES: Final = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni")
"""The CPU features kernels are chosen by, as ``/proc/cpuinfo`` and the mask spell them."""


@attrs.frozen(kw_only=True)
class Cpu(AbstractDevice):
    """The host CPU, with the instruction-set features kernels are chosen by.

    >>> Cpu().features == CpuFeatures(), Cpu(features=CpuFeatures(avx2=True)).features.vector_int4
    (True, True)
    """

    features: CpuFeatures = CpuFeatures()

    @property
    def label(self) -> str:
        """The torch device string."""
        return "cpu"


@attrs.frozen(kw_only=True)
class Cuda(AbstractDevice):
    """One CUDA GPU.

    Attributes:
        index: The CUDA device index.
        capability: Compute capability ``(major, minor)``: ``(8, 0)`` for an A100.
        name: The device name as the driver reports it.
        memory: Total memory in bytes, or 0 when unknown.
    """

    index: int = 0
    capability: tuple[int, int] = (8, 0)
    name: str = ""
    memory: int = 0

    @property
    def label(self) -> str:
        """The torch device string."""
        return f"cuda:{self.index}"


@attrs.frozen
class Mps(AbstractDevice):
    """Apple's Metal Performance Shaders device."""

    @property
    def label(self) -> str:
        """The torch device string."""
        return "mps"


@attrs.frozen(kw_only=True)
class Environment:
    """What is installed and which devices exist, captured once.

    Attributes:
        packages: Installed distributions relevant to loading (names are lower-case).
        devices: The devices torch can use; the CPU is always there.
        python: The interpreter version.
    """

    packages: tuple[Package, ...] = ()
    devices: tuple[AbstractDevice, ...] = (Cpu(),)
    python: tuple[int, int, int] = (3, 11, 0)

    _index: dict[str, Version] = attrs.field(init=False, eq=False, repr=False)
    _cuda: tuple[Cuda, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Built once: planning asks for versions many times. The first of duplicate names wins.
        index: dict[str, Version] = {}
        for p in self.packages:
            index.setdefault(_normalize(p.name), p.version)
        object.__setattr__(self, "_index", index)
        devices: object = self.devices  # untyped callers pass anything; plan reports it
        found = tuple(d for d in devices if isinstance(d, Cuda)) if isinstance(devices, tuple) else ()
        object.__setattr__(self, "_cuda", found)

    def version_of(self, name: str) -> Version | None:
        """Return the installed version of a distribution, or ``None`` when absent."""
        found = self._index.get(name)
        return found if found is not None else self._index.get(_normalize(name))

    def cuda(self) -> tuple[Cuda, ...]:
        """The CUDA devices, in index order."""
        return self._cuda

    def summary(self) -> str:
        """One line per fact, for ``quantdispatch inspect``."""
        lines = ["python " + ".".join(map(str, self.python))]
        lines += [f"{p.name} {p.version}" for p in self.packages]
        lines += [_describe(d) for d in self.devices]
        return "\n".join(lines)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _describe(d: AbstractDevice) -> str:
    if isinstance(d, Cuda):
        return f"device {d.label}: {d.name or 'CUDA GPU'}, sm_{d.capability[0]}{d.capability[1]}"
    if isinstance(d, Cpu):
        return f"device {d.label}: " + d.features.describe()
    return f"device {d.label}"
