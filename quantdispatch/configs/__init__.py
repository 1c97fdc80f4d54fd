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
from .codebook import Aqlm as Aqlm
from .codebook import Higgs as Higgs
from .codebook import Spqr as Spqr
from .codebook import Vptq as Vptq
from .compressed_tensors import CompressedTensors as CompressedTensors
from .compressed_tensors import CtArgs as CtArgs
from .compressed_tensors import CtPreset as CtPreset
from .compressed_tensors import CtScheme as CtScheme
from .compressed_tensors import CtSparsity as CtSparsity
from .fp4 import FourOverSix as FourOverSix
from .fp4 import FpQuant as FpQuant
from .fp4 import Mxfp4 as Mxfp4
from .fp4 import Nvfp4 as Nvfp4
from .fp8 import AbstractFineGrainedFp8 as AbstractFineGrainedFp8
from .fp8 import FbgemmFp8 as FbgemmFp8
from .fp8 import Fp8 as Fp8
from .fp8 import Mxfp8 as Mxfp8
from .gguf import Gguf as Gguf
from .gguf import GgufTensor as GgufTensor
from .gptq import AbstractGptq as AbstractGptq
from .gptq import Gptq as Gptq
from .gptq import GptqV2 as GptqV2
from .integer import AbstractAutoRound as AbstractAutoRound
from .integer import AutoRound as AutoRound
from .integer import AutoRoundAwq as AutoRoundAwq
from .integer import AutoRoundGptq as AutoRoundGptq
from .integer import BitNet as BitNet
from .integer import Eetq as Eetq
from .integer import Gemma as Gemma
from .integer import Hqq as Hqq
from .integer import Metal as Metal
from .integer import Quanto as Quanto
from .integer import Sinq as Sinq
from .mlx import Mlx as Mlx
from .modelopt import AbstractModelopt as AbstractModelopt
from .modelopt import ModeloptFp8 as ModeloptFp8
from .modelopt import ModeloptLayer as ModeloptLayer
from .modelopt import ModeloptMixed as ModeloptMixed
from .modelopt import ModeloptNvfp4 as ModeloptNvfp4
from .quark import Quark as Quark
from .torchao import Torchao as Torchao
from .torchao import TorchaoType as TorchaoType
from .unknown import UnknownMethod as UnknownMethod

__all__ = [
    "AbstractQuantConfig", "Extras", "AbstractBnb", "Bnb4Bit", "Bnb8Bit", "AbstractGptq", "Gptq", "GptqV2",
    "AbstractAwq", "AwqGemm", "AwqGemv", "AwqGemvFast", "AwqMarlin", "AwqLlm", "Gguf", "GgufTensor",
]
__all__ += [
    "AbstractFineGrainedFp8", "Fp8", "Mxfp8", "FbgemmFp8", "Mxfp4", "Nvfp4", "FourOverSix", "FpQuant", "CompressedTensors", "CtArgs",
    "CtScheme", "CtPreset", "CtSparsity", "AbstractModelopt", "ModeloptFp8", "ModeloptNvfp4", "ModeloptMixed", "ModeloptLayer", "Mlx", "Hqq",
    "Quanto", "Eetq", "Sinq", "Metal", "Gemma", "BitNet", "AbstractAutoRound", "AutoRound", "AutoRoundGptq", "AutoRoundAwq", "Aqlm", "Vptq",
    "Spqr", "Higgs", "Torchao", "TorchaoType", "Quark",
    "UnknownMethod",
]
