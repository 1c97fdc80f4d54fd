"""quantdispatch: load quantized models through one strictly typed front door.

Parse a checkpoint's quantization metadata into a typed, immutable config, validate it, plan the
load against a probed environment, and only then touch weights.

>>> import quantdispatch as qd
>>> cfg = qd.parse({"quant_method": "gptq", "bits": 4, "group_size": 128}).value
>>> env = qd.Environment(packages=(qd.Package("torch", qd.Version.parse("2.13.0")),))
>>> qd.plan(cfg, env).value.backend.name
'torch-packed'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .backend import Backend as Backend
from .backend import Candidate as Candidate
from .backend import Refusal as Refusal
from .backend import Requirement as Requirement
from .codec import dump as dump
from .codec import locate as locate
from .codec import parse as parse
from .codec.fields import FieldSpec as FieldSpec
from .codec.fields import Problem as Problem
from .codec.registry import register_codec as register_codec
from .codec.spec import TypeSpec as TypeSpec
from .configs import AbstractAutoRound as AbstractAutoRound
from .configs import AbstractFineGrainedFp8 as AbstractFineGrainedFp8
from .configs import AbstractModelopt as AbstractModelopt
from .configs import Aqlm as Aqlm
from .configs import AutoRound as AutoRound
from .configs import AutoRoundAwq as AutoRoundAwq
from .configs import AutoRoundGptq as AutoRoundGptq
from .configs import BitNet as BitNet
from .configs import CompressedTensors as CompressedTensors
from .configs import CtArgs as CtArgs
from .configs import CtPreset as CtPreset
from .configs import CtScheme as CtScheme
from .configs import CtSparsity as CtSparsity
from .configs import Eetq as Eetq
from .configs import FbgemmFp8 as FbgemmFp8
from .configs import FourOverSix as FourOverSix
from .configs import Fp8 as Fp8
from .configs import FpQuant as FpQuant
from .configs import Gemma as Gemma
from .configs import Higgs as Higgs
from .configs import Hqq as Hqq
from .configs import Metal as Metal
from .configs import Mlx as Mlx
from .configs import ModeloptFp8 as ModeloptFp8
from .configs import ModeloptLayer as ModeloptLayer
from .configs import ModeloptMixed as ModeloptMixed
from .configs import ModeloptNvfp4 as ModeloptNvfp4
from .configs import Mxfp4 as Mxfp4
from .configs import Mxfp8 as Mxfp8
from .configs import Nvfp4 as Nvfp4
from .configs import Quanto as Quanto
from .configs import Quark as Quark
from .configs import Sinq as Sinq
from .configs import Spqr as Spqr
from .configs import Torchao as Torchao
from .configs import TorchaoType as TorchaoType
from .configs import UnknownMethod as UnknownMethod
from .configs import Vptq as Vptq
from .configs.awq import (
    AbstractAwq as AbstractAwq,
)
from .configs.awq import (
    AwqGemm as AwqGemm,
)
from .configs.awq import (
    AwqGemv as AwqGemv,
)
from .configs.awq import (
    AwqGemvFast as AwqGemvFast,
)
from .configs.awq import (
    AwqLlm as AwqLlm,
)
from .configs.awq import (
    AwqMarlin as AwqMarlin,
)
from .configs.base import AbstractQuantConfig as AbstractQuantConfig
from .configs.base import Extras as Extras
from .configs.bnb import AbstractBnb as AbstractBnb
from .configs.bnb import Bnb4Bit as Bnb4Bit
from .configs.bnb import Bnb8Bit as Bnb8Bit
from .configs.gguf import Gguf as Gguf
from .configs.gguf import GgufTensor as GgufTensor
from .configs.gptq import AbstractGptq as AbstractGptq
from .configs.gptq import Gptq as Gptq
from .configs.gptq import GptqV2 as GptqV2
from .dispatch import register_backend as register_backend
from .dispatch import select_backend as select_backend
from .dtypes import DType as DType
from .environment import (
    AbstractDevice as AbstractDevice,
)
from .environment import (
    Cpu as Cpu,
)
from .environment import (
    CpuFeatures as CpuFeatures,
)
from .environment import (
    Cuda as Cuda,
)
from .environment import (
    Environment as Environment,
)
from .environment import (
    Mps as Mps,
)
from .environment import (
    Package as Package,
)
from .environment import (
    Version as Version,
)
from .gguf.types import GgmlType as GgmlType
from .gguf.types import LlamaFileType as LlamaFileType
from .plan import LoadOptions as LoadOptions
from .plan import LoadPlan as LoadPlan
from .plan import Rejection as Rejection
from .plan import plan as plan
from .plan import reconcile as reconcile
from .result import Err as Err
from .result import Issue as Issue
from .result import Issues as Issues
from .result import IssuesError as IssuesError
from .result import Ok as Ok
from .result import Result as Result
from .rules import (
    ConfigRule as ConfigRule,
)
from .rules import (
    DeviceRule as DeviceRule,
)
from .rules import (
    RegistrationError as RegistrationError,
)
from .rules import (
    backend_notes as backend_notes,
)
from .rules import (
    backends as backends,
)
from .rules import (
    compute_dtype as compute_dtype,
)
from .rules import (
    cross_field_issues as cross_field_issues,
)
from .rules import (
    declare_backend as declare_backend,
)
from .rules import (
    quantizes_on_load as quantizes_on_load,
)
from .rules import (
    skip_modules as skip_modules,
)
from .validate import validate as validate

if TYPE_CHECKING:
    from .loading import Loaded as Loaded
    from .loading import LoadStats as LoadStats
    from .loading import load as load
    from .probing import probe as probe
    from .reading import Source as Source
    from .reading import read as read
    from .reading import read_config as read_config

__all__ = [
    # values
    "Ok", "Err", "Result", "Issue", "Issues", "IssuesError", "DType",
    # configs
    "AbstractQuantConfig", "Extras", "AbstractBnb", "Bnb4Bit", "Bnb8Bit", "AbstractGptq", "Gptq", "GptqV2",
    "AbstractAwq", "AwqGemm", "AwqGemv", "AwqGemvFast", "AwqMarlin", "AwqLlm", "Gguf", "GgufTensor", "GgmlType",
    "LlamaFileType",
    # pure pipeline
    "parse", "dump", "locate", "validate", "plan", "reconcile", "select_backend", "LoadOptions", "LoadPlan", "Rejection",
    # environment
    "Environment", "Package", "Version", "AbstractDevice", "Cpu", "CpuFeatures", "Cuda", "Mps",
    # shell (imported on first use)
    "probe", "read", "read_config", "Source", "load", "Loaded", "LoadStats",
    # extension
    "register_codec", "register_backend", "TypeSpec", "FieldSpec", "Problem", "Backend", "Requirement", "Candidate",
    "Refusal", "RegistrationError", "declare_backend", "backends", "ConfigRule", "DeviceRule", "compute_dtype",
    "skip_modules", "quantizes_on_load", "cross_field_issues", "backend_notes",
]
__all__ += [  # the method families beyond bitsandbytes, GPTQ, AWQ and GGUF
    "AbstractFineGrainedFp8", "Fp8", "Mxfp8", "FbgemmFp8", "Mxfp4", "Nvfp4", "FourOverSix", "FpQuant", "CompressedTensors", "CtArgs",
    "CtScheme", "CtPreset", "CtSparsity", "AbstractModelopt", "ModeloptFp8", "ModeloptNvfp4", "ModeloptMixed", "ModeloptLayer", "Mlx", "Hqq",
    "Quanto", "Eetq", "Sinq", "Metal", "Gemma", "BitNet", "AbstractAutoRound", "AutoRound", "AutoRoundGptq", "AutoRoundAwq", "Aqlm", "Vptq",
    "Spqr", "Higgs", "Torchao", "TorchaoType", "Quark",
    "UnknownMethod",
]

_SHELL = {"probe": ".probing", "read": ".reading", "read_config": ".reading", "Source": ".reading", "load": ".loading",
          "Loaded": ".loading", "LoadStats": ".loading"}


def __getattr__(name: str) -> object:
    """Import the shell (file reading, environment probing) on first use only."""
    module = _SHELL.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
