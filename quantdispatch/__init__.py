"""quantdispatch: load quantized models through one strictly typed front door.

Parse a checkpoint's quantization metadata into a typed, immutable config, validate it, plan the
load against a probed environment, and only then touch weights.

>>> import quantdispatch as qd
>>> cfg = qd.parse({"quant_method": "gptq", "bits": 4, "group_size": 128}).value
>>> env = qd.Environment(packages=(qd.Package("torch", qd.Version.parse("2.13.0")),))
>>> qd.plan(cfg, env).value.backend.name
'torch-gptq'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .backend import Backend as Backend, Candidate as Candidate, Refusal as Refusal, Requirement as Requirement
from .codec import dump as dump, locate as locate, parse as parse
from .codec.fields import FieldSpec as FieldSpec, Problem as Problem
from .codec.registry import register_codec as register_codec
from .codec.spec import TypeSpec as TypeSpec
from .configs.awq import (
    AbstractAwq as AbstractAwq, AwqGemm as AwqGemm, AwqGemv as AwqGemv, AwqGemvFast as AwqGemvFast,
    AwqLlm as AwqLlm, AwqMarlin as AwqMarlin,
)
from .configs.base import AbstractQuantConfig as AbstractQuantConfig, Extras as Extras
from .configs.bnb import AbstractBnb as AbstractBnb, Bnb4Bit as Bnb4Bit, Bnb8Bit as Bnb8Bit
from .configs.gguf import Gguf as Gguf, GgufTensor as GgufTensor
from .configs.gptq import AbstractGptq as AbstractGptq, Gptq as Gptq, GptqV2 as GptqV2
from .dispatch import register_backend as register_backend, select_backend as select_backend
from .dtypes import DType as DType
from .environment import (
    AbstractDevice as AbstractDevice, Cpu as Cpu, Cuda as Cuda, Environment as Environment, Mps as Mps,
    Package as Package, Version as Version,
)
from .gguf.types import GgmlType as GgmlType, LlamaFileType as LlamaFileType
from .plan import LoadOptions as LoadOptions, LoadPlan as LoadPlan, Rejection as Rejection, plan as plan, reconcile as reconcile
from .rules import (
    ConfigRule as ConfigRule, DeviceRule as DeviceRule, RegistrationError as RegistrationError, backends as backends,
    compute_dtype as compute_dtype, cross_field_issues as cross_field_issues, declare_backend as declare_backend,
    quantizes_on_load as quantizes_on_load, skip_modules as skip_modules,
)
from .result import Err as Err, Issue as Issue, Issues as Issues, Ok as Ok, Result as Result
from .validate import validate as validate

if TYPE_CHECKING:
    from .probing import probe as probe
    from .reading import Source as Source, read as read, read_config as read_config

__all__ = [
    # values
    "Ok", "Err", "Result", "Issue", "Issues", "DType",
    # configs
    "AbstractQuantConfig", "Extras", "AbstractBnb", "Bnb4Bit", "Bnb8Bit", "AbstractGptq", "Gptq", "GptqV2",
    "AbstractAwq", "AwqGemm", "AwqGemv", "AwqGemvFast", "AwqMarlin", "AwqLlm", "Gguf", "GgufTensor", "GgmlType",
    "LlamaFileType",
    # pure pipeline
    "parse", "dump", "locate", "validate", "plan", "reconcile", "select_backend", "LoadOptions", "LoadPlan", "Rejection",
    # environment
    "Environment", "Package", "Version", "AbstractDevice", "Cpu", "Cuda", "Mps",
    # shell (imported on first use)
    "probe", "read", "read_config", "Source",
    # extension
    "register_codec", "register_backend", "TypeSpec", "FieldSpec", "Problem", "Backend", "Requirement", "Candidate",
    "Refusal", "RegistrationError", "declare_backend", "backends", "ConfigRule", "DeviceRule", "compute_dtype",
    "skip_modules", "quantizes_on_load", "cross_field_issues",
]

_SHELL = {"probe": ".probing", "read": ".reading", "read_config": ".reading", "Source": ".reading"}


def __getattr__(name: str) -> object:
    """Import the shell (file reading, environment probing) on first use only."""
    module = _SHELL.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
