"""Backend selection by multiple dispatch on (config type, device type).

``select_backend(config, device)`` returns the backends that can run a config on a device kind,
best first, each with the config-specific reasons it cannot take this config, or a typed
``Refusal`` when no backend exists at all. It is total: the fallback on the abstract bases
answers every pair, including third-party types nobody registered a backend for. The built-in
implementations live beside their backends in ``quantdispatch.methods``.

>>> from quantdispatch import Gptq, Cuda
>>> [c.backend.name for c in select_backend(Gptq(bits=4), Cuda(capability=(8, 0)))]
['gptqmodel-marlin', 'torch-packed', 'gptqmodel-torch']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from . import methods as _methods  # noqa: F401  (registers the built-in implementations)
from .configs.base import AbstractQuantConfig
from .environment import AbstractDevice
from .methods.gguf import GGUF_DEQUANT_TYPES
from .rules import Selection, select_backend

__all__ = ["select_backend", "register_backend", "Selection", "GGUF_DEQUANT_TYPES"]

C = TypeVar("C", bound=AbstractQuantConfig)
D = TypeVar("D", bound=AbstractDevice)


def register_backend(config_type: type[C], device_type: type[D]) -> Callable[[Callable[[C, D], Selection]], Callable[[C, D], Selection]]:
    """Register how ``select_backend`` answers for ``(config_type, device_type)``.

    The decorated function receives the config and the device (positional-only) and returns
    candidates or a ``Refusal``. Its annotations must name exactly the two registered types.
    Declare the backends it offers with ``declare_backend`` so that plans and ``probe`` know them.

    Raises:
        RegistrationError: The signature is already registered, or would be ambiguous with one.
    """
    return select_backend.register(config_type, device_type)
