"""Loader of the bitsandbytes backends, through Transformers' bitsandbytes integration.

bitsandbytes' packed 4-bit layout carries its quantization state (absmax, the code map, nested
statistics) in tensors whose names and reassembly bitsandbytes owns; Transformers is its
reference reader. Our plan decides (device, dtype, quantize-on-load or pre-quantized, skipped
modules) and the checkpoint's headers are checked first; Transformers then performs the load.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..codec import dump
from ..configs.bnb import AbstractBnb
from ..loading.request import LoadRequest
from ..result import Err, Issue, Issues, Ok, Result
from ..text import quote

__all__ = ["load"]


def load(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Load a bitsandbytes checkpoint, or quantize a full-precision one while loading."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    plan = request.plan
    config = plan.config
    if not isinstance(config, AbstractBnb):
        return Err((Issue("load.backend.mismatch", "$", f"bitsandbytes cannot load {type(config).__name__}"),))
    kwargs: dict[str, object] = {}
    if not plan.pre_quantized:
        kwargs["quantization_config"] = BitsAndBytesConfig.from_dict(dump(config, style="transformers"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bitsandbytes' notes about casting fp32 inputs
            model = AutoModelForCausalLM.from_pretrained(
                request.directory, device_map=request.device_map or {"": plan.device.label}, dtype=getattr(torch, plan.dtype.value),
                max_memory=dict(request.max_memory) if request.max_memory else None,
                offload_folder=str(request.offload_folder) if request.offload_folder else None,
                trust_remote_code=request.trust_remote_code, **kwargs,
            )
    except (ValueError, KeyError, OSError, RuntimeError, TypeError, ImportError) as e:
        return Err((Issue("load.bnb.failed", "$", f"bitsandbytes could not load the checkpoint: {quote(str(e), 240)}"),))
    model.eval()
    return Ok((model, request.checkpoint.nbytes))
