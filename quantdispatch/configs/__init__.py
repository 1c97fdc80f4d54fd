"""The config types: one frozen ``attrs`` class per quantization method and on-disk variant."""

from .awq import AbstractAwq as AbstractAwq
from .awq import AwqGemm as AwqGemm
from .awq import AwqGemv as AwqGemv
from .awq import AwqGemvFast as AwqGemvFast
from .awq import AwqLlm as AwqLlm
from .awq import AwqMarlin as AwqMarlin
from .base import AbstractQuantConfig as AbstractQuantConfig
from .base import Extras as Extras
from .bnb import AbstractBnb as AbstractBnb
from .bnb import Bnb4Bit as Bnb4Bit
from .bnb import Bnb8Bit as Bnb8Bit
from .gguf import Gguf as Gguf
from .gguf import GgufTensor as GgufTensor
from .gptq import AbstractGptq as AbstractGptq
from .gptq import Gptq as Gptq
from .gptq import GptqV2 as GptqV2

__all__ = [
    "AbstractQuantConfig", "Extras", "AbstractBnb", "Bnb4Bit", "Bnb8Bit", "AbstractGptq", "Gptq", "GptqV2",
    "AbstractAwq", "AwqGemm", "AwqGemv", "AwqGemvFast", "AwqMarlin", "AwqLlm", "Gguf", "GgufTensor",
]
