"""Layouts: pure descriptions of how each on-disk packing stores one linear layer.

Importing this package declares the built-in layouts and registers their ``layout_of`` rules. A
layout file holds everything about its packing: the tensors, what can be derived, what indexes
what, and lazy references to its torch side. See ``base`` for what a layout declares.
"""

from . import auto_round as auto_round
from . import awq as awq
from . import bnb as bnb
from . import compressed_tensors as compressed_tensors
from . import dense as dense
from . import fp4 as fp4
from . import fp8 as fp8
from . import gguf as gguf
from . import gptq as gptq
from . import mxfp4 as mxfp4
from .awq import AwqPacked as AwqPacked
from .base import FLOAT_CODES as FLOAT_CODES
from .base import AbstractIntLayout as AbstractIntLayout
from .base import AbstractLayout as AbstractLayout
from .base import Lazy as Lazy
from .base import TensorDecl as TensorDecl
from .base import Unpackable as Unpackable
from .base import declare_layout as declare_layout
from .base import layout_of as layout_of
from .base import layouts as layouts
from .bnb import Bnb4BitBlocks as Bnb4BitBlocks
from .bnb import Bnb8BitRows as Bnb8BitRows
from .compressed_tensors import CtIntQuantized as CtIntQuantized
from .compressed_tensors import CtPackQuantized as CtPackQuantized
from .dense import Dense as Dense
from .fp4 import CtNvfp4 as CtNvfp4
from .fp4 import ModeloptNvfp4Blocks as ModeloptNvfp4Blocks
from .fp8 import Fp8Scaled as Fp8Scaled
from .fp8 import Fp8ScaleInv as Fp8ScaleInv
from .gguf import GgufBlocks as GgufBlocks
from .gptq import GptqPacked as GptqPacked
from .mxfp4 import Mxfp4Experts as Mxfp4Experts

__all__ = [
    "AbstractLayout", "AbstractIntLayout", "Lazy", "TensorDecl", "Unpackable", "FLOAT_CODES", "layout_of", "declare_layout",
    "layouts", "GptqPacked", "AwqPacked", "CtPackQuantized", "CtIntQuantized", "CtNvfp4", "ModeloptNvfp4Blocks",
    "Fp8ScaleInv", "Fp8Scaled", "Bnb4BitBlocks", "Bnb8BitRows", "GgufBlocks", "Dense", "Mxfp4Experts",
    "auto_round", "awq", "bnb", "compressed_tensors", "dense", "fp4", "fp8", "gguf", "gptq", "mxfp4",
]
