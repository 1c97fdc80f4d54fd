"""Loader of the ``gptqmodel-torch`` backend: GPTQModel's own ``TorchLinear`` in every packed layer.

The checkpoint streams into the portable ``GptqLinear`` modules as ``torch-packed`` does; then
(``post_load``) each is replaced, one layer at a time, by a ``TorchLinear`` (GPTQModel 7.6.0,
``gptqmodel/nn_modules/qlinear/torch.py``) that takes over its tensors without copying them:
``qweight``, ``scales``, ``g_idx`` and ``bias`` as stored, and ``qzeros`` in GPTQModel's v2 layout
(``TorchLinear.REQUIRES_FORMAT_V2``; a v1 checkpoint is converted exactly as GPTQModel's loader
does, by ``kernels.gptq.gptq_v2_qzeros``). A layer ``TorchLinear.validate`` refuses keeps the
portable module, which computes the same function.

Two choices differ from GPTQModel's own loader, on purpose:

- ``torch.compile`` is skipped (``optimized`` is set before ``post_init``, which is where
  ``TorchLinear.optimize`` would wrap ``dequantize_weight`` in inductor). On the 2-core AVX2 CPU
  the compile took about 6 s per layer on its first call and did not make the bfloat16 forward
  faster (309 ms against 306 ms eager, 4096x4096 4-bit, batch 1).
- Importing ``gptqmodel`` is contained (:func:`import_contained`). In 7.6.0 that import prints a
  banner and log lines to stdout and stderr (some from C++ and from torch's own log handler, so at
  the file-descriptor level too), and sets ``PYTORCH_ALLOC_CONF``, ``CUDA_DEVICE_ORDER``,
  ``KMP_DUPLICATE_LIB_OK``, ``TORCHINDUCTOR_CACHE_DIR``, and, through tokenicer, ``HF_HOME``,
  ``HF_HUB_CACHE``, ``HF_MODULES_CACHE`` and ``TRANSFORMERS_CACHE`` (to ``/tmp/tokenicer_hf_home``);
  it adds warning filters, and a stderr handler and the INFO level to the root logger. All of
  these are put back. What stays: the modules it imported (``sys.modules``), and its monkeypatches
  of ``safetensors.torch.save_file`` (a thread-safe wrapper) and of Transformers' GPTQ quantizer
  and kernel hub (``gptqmodel/__init__.py``), which GPTQModel's own code relies on.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..configs.gptq import AbstractGptq
from ..kernels.gptq import gptq_v2_qzeros
from ..kernels.modules import GptqLinear
from ..layouts.gptq import gptq_layout
from ..loading.request import LoadRequest
from ..loading.stream import load_streamed
from ..quiet import contained
from ..result import Err, Issue, Issues, Result
from ..text import quote

__all__ = ["load_torch", "import_contained", "to_torch_linear"]

TORCH_LINEAR_MODULE = "gptqmodel.nn_modules.qlinear.torch"


def import_contained(name: str) -> ModuleType | Issue:
    """Import ``name`` (a gptqmodel module) with its import-time side effects contained (see the
    module docstring); an import that fails is an issue quoting the end of what it printed."""
    if name in sys.modules:
        return sys.modules[name]
    with contained(f"import {name}") as sink:
        try:
            module = importlib.import_module(name)
        except Exception as e:  # third-party import code: any failure means the backend is unusable here
            sink.seek(0)
            printed = sink.read()[-400:]
            return Issue("load.gptqmodel.import", "$", f"importing {name} failed: {quote(f'{type(e).__name__}: {e}', 200)}"
                         + (f"; it printed: {quote(printed, 400)}" if printed.strip() else ""),
                         "reinstall the gptq extra (gptqmodel==7.6.0), or choose another backend")
    return module


def to_torch_linear(torch_linear: Any, module: GptqLinear, config: AbstractGptq, dtype: torch.dtype) -> nn.Module | None:
    """GPTQModel's ``TorchLinear`` holding ``module``'s tensors (qzeros as v2), ready to run, or
    ``None`` where its ``validate`` refuses the layer for activations of ``dtype``."""
    shape = dict(bits=module.bits, group_size=module.group_size, desc_act=config.desc_act, sym=config.sym,
                 in_features=module.in_features, out_features=module.out_features, pack_dtype=torch.int32)
    fits, _why = torch_linear.validate(**shape, dtype=dtype)
    if not fits:
        return None
    layer: Any = torch_linear(**shape, bias=module.bias is not None, register_buffers=False)
    qzeros = gptq_v2_qzeros(module.qzeros, module.bits) if module.v1 else module.qzeros
    for name, tensor in (("qweight", module.qweight), ("qzeros", qzeros), ("scales", module.scales), ("g_idx", module.g_idx),
                         ("bias", module.bias)):
        layer.register_buffer(name, tensor)
    layer.qzero_format(format=2)
    layer.optimized = True  # skip TorchLinear.optimize's torch.compile (see the module docstring)
    layer.post_init()
    built: nn.Module = layer
    return built


def load_torch(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Load a GPTQ checkpoint with GPTQModel's ``TorchLinear`` in every layer it takes."""
    config = request.plan.config
    if not isinstance(config, AbstractGptq):
        return Err((Issue("load.backend.mismatch", "$", f"gptqmodel-torch loads GPTQ, not {type(config).__name__}"),))
    gptq: AbstractGptq = config
    imported = import_contained(TORCH_LINEAR_MODULE)
    if isinstance(imported, Issue):
        return Err((imported,))
    torch_linear = imported.TorchLinear
    dtype = getattr(torch, request.plan.dtype.value)

    layout = gptq_layout(gptq)

    def make(name: str, linear: nn.Linear) -> nn.Module:
        return GptqLinear(layout, linear.in_features, linear.out_features, linear.bias is not None, device="meta")

    def swap(model: nn.Module, names: tuple[str, ...]) -> int:
        # The new layers take the old ones' tensors, not copies: nothing to release per layer.
        done = 0
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            old = parent.get_submodule(child)
            assert isinstance(old, GptqLinear)
            with torch.no_grad():
                built = to_torch_linear(torch_linear, old, gptq, dtype)
            if built is not None:
                setattr(parent, child, built)
                done += 1
        return done

    return load_streamed(request, layout, make, swap)
