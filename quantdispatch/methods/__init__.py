"""The built-in methods: for each, its backends, their fit rules and its planning rules, side by
side in one module. Importing this package registers them (``quantdispatch`` does so on import).

Adding a backend for a built-in method is one descriptor with its ``select_backend``
registration here, plus the module its ``loader`` names; a third-party method does the same
from its own package (see ``docs/extending.md``).
"""

from . import awq as awq
from . import bnb as bnb
from . import gguf as gguf
from . import gptq as gptq

__all__ = ["awq", "bnb", "gguf", "gptq"]
