"""The config types: one frozen ``attrs`` class per quantization method and on-disk variant."""

from .awq import AbstractAwq as AbstractAwq, AwqGemm as AwqGemm, AwqGemv as AwqGemv, AwqGemvFast as AwqGemvFast
from .awq import AwqLlm as AwqLlm, AwqMarlin as AwqMarlin
from .base import AbstractQuantConfig as AbstractQuantConfig, Extras as Extras
from .bnb import AbstractBnb as AbstractBnb, Bnb4Bit as Bnb4Bit, Bnb8Bit as Bnb8Bit
from .gguf import Gguf as Gguf, GgufTensor as GgufTensor
from .gptq import AbstractGptq as AbstractGptq, Gptq as Gptq, GptqV2 as GptqV2

__all__ = [
    "AbstractQuantConfig", "Extras", "AbstractBnb", "Bnb4Bit", "Bnb8Bit", "AbstractGptq", "Gptq", "GptqV2",
    "AbstractAwq", "AwqGemm", "AwqGemv", "AwqGemvFast", "AwqMarlin", "AwqLlm", "Gguf", "GgufTensor",
]
