"""The built-in methods: for each, its backends, their fit rules and its planning rules, side by
side in one module. Importing this package registers them (``quantdispatch`` does so on import).

Kernels are not here: they serve layouts, whatever method made them (``quantdispatch.kernel``,
``quantdispatch.layouts``), and a method's rules place them with ``kernel_candidates``. An
external package's backend for a method is one descriptor with its ``select_backend``
registration here, plus the module its ``loader`` names; a third-party method does the same
from its own package (see ``docs/extending.md``).
"""

from ..rules import backends as _backends
from . import awq as awq
from . import bnb as bnb
from . import codebook as codebook
from . import compressed_tensors as compressed_tensors
from . import fp8 as fp8
from . import gguf as gguf
from . import gptq as gptq
from . import integer as integer

__all__ = ["awq", "bnb", "codebook", "compressed_tensors", "fp8", "gguf", "gptq", "integer", "BUILTIN_BACKENDS"]

BUILTIN_BACKENDS: frozenset[str] = frozenset(b.name for b in _backends())
"""The backends the built-in methods declare (taken before any plugin can add its own)."""
