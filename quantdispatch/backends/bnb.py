"""Loader of the bitsandbytes backends, through Transformers' bitsandbytes integration.

bitsandbytes' packed 4-bit layout carries its quantization state (absmax, the code map, nested
statistics) in tensors whose names and reassembly bitsandbytes owns; Transformers is its
reference reader. Our plan decides (device, dtype, quantize-on-load or pre-quantized, skipped
modules); then, before Transformers reads anything, every tensor of the checkpoint is checked
against what the model expects, as on the other paths (missing, unexpected, mis-shaped), with
each quantized layer's tensors derived from its shape and its own quantization state:

- 4-bit (``Linear4bit``), for a layer of ``n = out * in`` weights and block size ``b``::

      weight                                    quant_storage  [ceil(n / 2) / itemsize, 1]  two codes a byte
      weight.absmax                             float32 [ceil(n / b)], or uint8 when nested (double quant)
      weight.quant_map                          float32 [16]
      weight.nested_absmax                      float32 [ceil(ceil(n / b) / nested_b)]   double quant only
      weight.nested_quant_map                   float32 [256]                            double quant only
      weight.quant_state.bitsandbytes__nf4|fp4  uint8 [length]: a JSON object (quant_type, blocksize,
                                                dtype, shape; nested_blocksize, nested_dtype,
                                                nested_offset when nested), parsed and checked here

- 8-bit (``Linear8bitLt``): ``weight`` int8 ``[out, in]``, ``SCB`` float32 ``[out]``, and
  optionally ``weight_format`` (a uint8 scalar, 0: "row", the only format bitsandbytes reads).

The layers are ``nn.Linear`` and Transformers' ``Conv1D`` (GPT-2), whose ``[in, out]`` weight is
quantized transposed, as ``[out, in]``. A layer is taken as quantized when the checkpoint holds
any of its quantization tensors; once
Transformers has loaded, its bitsandbytes modules must be exactly those layers, and its own
loading report (``output_loading_info``) must be empty: anything else is an issue, not a model.
Where Transformers maps the checkpoint's names onto the model's (its conversion mapping: MoE
experts stored one by one and fused at load, legacy ``LayerNorm.gamma``), names cannot be
compared one for one before the load, and that report is the check.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from ..codec import dump
from ..configs.bnb import AbstractBnb, Bnb4Bit
from ..jsontext import decode_json
from ..loading.checkpoint import Checkpoint
from ..loading.request import LoadRequest
from ..loading.stream import TORCH_DTYPES, build_skeleton, check_expected, ignored_unexpected, refusal_issues, tied_targets
from ..quiet import quiet_import, transformers_progress_off
from ..result import Err, Issue, Issues, Ok, Result
from ..text import quote

__all__ = ["load", "check_bnb_checkpoint"]

_QUANT_STATE: Final = "weight.quant_state.bitsandbytes__"
_BLOCKSIZES: Final = frozenset(2**i for i in range(5, 13))
"""Block sizes bitsandbytes quantizes with (32 to 4096)."""
_STATE_DTYPES: Final = frozenset({"float16", "bfloat16", "float32"})
"""The dtypes a quantization state may name (bitsandbytes reads the name with ``getattr(torch, name)``)."""
_STATE_KEYS: Final = frozenset({"quant_type", "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset"})
_NESTED: Final = ("nested_blocksize", "nested_dtype", "nested_offset")
_MAX_STATE_BYTES: Final = 4096
_FLOAT32_STATS: Final = frozenset({"absmax", "quant_map", "nested_absmax", "nested_quant_map", "SCB"})
"""Statistics bitsandbytes writes and reads as float32 only (a nested ``absmax`` is uint8, checked as such)."""
_FOUR_BIT_SUFFIXES: Final = ("weight.absmax", "weight.quant_map", "weight.nested_absmax", "weight.nested_quant_map")


def _issue(code: str, name: str, message: str, hint: str | None = None) -> Issue:
    return Issue(code, f"$.tensors[{quote(name)}]", message, hint)


def _meta(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def _visit(checkpoint: Checkpoint, names: list[str], visit: Callable[[str, torch.Tensor], None]) -> Issue | None:
    """Read the named (checked) tensors one at a time, file by file, handing each to ``visit``
    and holding none: the scales of a large model are a few hundred MB."""
    if checkpoint.unpickled is not None:
        for n in names:
            visit(n, checkpoint.unpickled[n])
        return None
    from safetensors import SafetensorError, safe_open

    by_file: dict[str, list[str]] = {}
    for n in names:
        by_file.setdefault(checkpoint.where[n], []).append(n)
    for path, tensor_names in by_file.items():
        try:
            with safe_open(path, framework="pt") as f:
                for n in tensor_names:
                    visit(n, f.get_tensor(n))
        except SafetensorError as e:
            return refusal_issues(Path(path), e)[0]
        except OSError as e:
            return Issue("load.file.unreadable", "$", f"{quote(path)}: {quote(str(e), 200)}", "the file changed or vanished while it was read")
    return None


def _read(checkpoint: Checkpoint, names: list[str]) -> dict[str, torch.Tensor] | Issue:
    """The few small tensors the check keeps (quantization states, a few KiB each)."""
    out: dict[str, torch.Tensor] = {}
    failed = _visit(checkpoint, names, out.__setitem__)
    return out if failed is None else failed


def _weight_shape(module: nn.Module) -> tuple[int, int] | None:
    """``(out, in)`` of a layer bitsandbytes can quantize: ``nn.Linear``, or Transformers' ``Conv1D``
    (GPT-2; its weight is stored ``[in, out]`` dense, and quantized as the transposed ``[out, in]``)."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, Conv1D):
        return int(module.nf), int(module.nx)
    return None


def _state(name: str, raw: torch.Tensor, layer: tuple[int, int], quant_type: str, config: Bnb4Bit) -> dict[str, Any] | Issue:
    """A 4-bit layer's packed quantization state, decoded and checked against the layer and the config."""
    suffix = name.rpartition("__")[2]
    if raw.dtype != torch.uint8 or raw.dim() != 1 or raw.numel() > _MAX_STATE_BYTES:
        return _issue("load.bnb.quant_state.invalid", name, f"{quote(name)} is {raw.dtype}{list(raw.shape)}, not a uint8 JSON blob")
    try:
        text = bytes(raw.tolist()).decode("utf-8")
    except UnicodeDecodeError:
        return _issue("load.bnb.quant_state.invalid", name, f"{quote(name)} is not UTF-8 JSON")
    decoded = decode_json(text)
    if isinstance(decoded, Err) or not isinstance(decoded.value, dict):
        why = decoded.error[0].message if isinstance(decoded, Err) else "not a JSON object"
        return _issue("load.bnb.quant_state.invalid", name, f"{quote(name)}: {quote(why, 120)}")
    state: dict[str, Any] = decoded.value
    problems: list[str] = []
    unknown = sorted(set(state) - _STATE_KEYS)
    if unknown:
        problems.append(f"unknown fields {quote(unknown)}")
    if state.get("quant_type") != suffix or suffix != quant_type:
        problems.append(f"quant_type {quote(state.get('quant_type'))} under the name {quote(suffix)}; the config says {quote(quant_type)}")
    if type(state.get("blocksize")) is not int or state["blocksize"] not in _BLOCKSIZES:
        problems.append(f"blocksize {quote(state.get('blocksize'))} is not a power of two from 32 to 4096")
    if state.get("dtype") not in _STATE_DTYPES:
        problems.append(f"dtype {quote(state.get('dtype'))} is not one of {sorted(_STATE_DTYPES)}")
    shape = state.get("shape")
    if not isinstance(shape, list) or [type(d) for d in shape] != [int, int] or shape != list(layer):
        problems.append(f"shape {quote(state.get('shape'))}, the layer is {list(layer)}")
    nested = [k for k in _NESTED if k in state]
    if nested and len(nested) < len(_NESTED):
        problems.append(f"only some of {list(_NESTED)} (double quantization needs all three)")
    elif nested:
        if type(state["nested_blocksize"]) is not int or state["nested_blocksize"] not in _BLOCKSIZES:
            problems.append(f"nested_blocksize {quote(state['nested_blocksize'])} is not a power of two from 32 to 4096")
        if state["nested_dtype"] not in _STATE_DTYPES:
            problems.append(f"nested_dtype {quote(state['nested_dtype'])} is not one of {sorted(_STATE_DTYPES)}")
        if type(state["nested_offset"]) not in (int, float) or not math.isfinite(state["nested_offset"]):
            problems.append(f"nested_offset {quote(state['nested_offset'])} is not a finite number")
    if bool(nested) != config.use_double_quant:
        problems.append(f"{'double' if nested else 'single'} quantization; the config says use_double_quant={config.use_double_quant}")
    if problems:
        return _issue("load.bnb.quant_state.invalid", name, f"{quote(name)}: " + "; ".join(problems),
                      "the quantization state does not match the layer or the config: the checkpoint was edited or mixes two saves")
    return state


def _four_bit(prefix: str, layer: tuple[int, int], state: Mapping[str, Any], config: Bnb4Bit) -> dict[str, torch.Tensor]:
    """The tensors one 4-bit layer's checkpoint holds, as meta tensors, from its checked state."""
    n = layer[0] * layer[1]
    storage = getattr(torch, config.quant_storage.value)
    itemsize = torch.empty((), dtype=storage).element_size()
    packed = -(-n // 2)
    blocks = -(-n // state["blocksize"])
    expected = {
        f"{prefix}.weight": _meta((-(-packed // itemsize), 1), storage),
        f"{prefix}.weight.quant_map": _meta((16,), torch.float32),
    }
    if "nested_blocksize" in state:
        expected[f"{prefix}.weight.absmax"] = _meta((blocks,), torch.uint8)
        expected[f"{prefix}.weight.nested_absmax"] = _meta((-(-blocks // state["nested_blocksize"]),), torch.float32)
        expected[f"{prefix}.weight.nested_quant_map"] = _meta((256,), torch.float32)
    else:
        expected[f"{prefix}.weight.absmax"] = _meta((blocks,), torch.float32)
    return expected


def check_bnb_checkpoint(model: nn.Module, checkpoint: Checkpoint, config: AbstractBnb) -> Result[frozenset[str], Issues]:
    """Check a pre-quantized bitsandbytes checkpoint against ``model`` (the dense skeleton of its
    config) before Transformers reads it: every tensor where the layout puts it, with its shape
    and dtype, each 4-bit quantization state decoded and consistent with its layer and the config,
    8-bit ``weight_format`` "row", the statistics float32 and finite (``absmax``, the code maps,
    ``SCB``). Returns the names of the layers stored quantized."""
    expected: dict[str, torch.Tensor] = dict(model.state_dict(keep_vars=True))
    four = isinstance(config, Bnb4Bit)
    state_names: dict[str, list[str]] = {}
    for n in checkpoint.where:
        owner, sep, _ = n.partition(f".{_QUANT_STATE}")
        if sep:
            state_names.setdefault(owner, []).append(n)
    marks = (*_FOUR_BIT_SUFFIXES, "SCB", "weight_format")
    quantized = {name: shape for name, m in model.named_modules() if (shape := _weight_shape(m)) is not None
                 and (name in state_names or any(f"{name}.{s}" in checkpoint.where for s in marks))}
    issues: list[Issue] = []
    layer_states: dict[str, str] = {}
    for name in quantized if four else ():
        found = sorted(state_names.get(name, ()))
        entry = checkpoint.entry(found[0]) if len(found) == 1 else None
        if entry is not None and entry.dtype == "U8" and len(entry.shape) == 1 and entry.nbytes <= _MAX_STATE_BYTES:
            layer_states[name] = found[0]
            continue
        if entry is not None:
            issues.append(_issue("load.bnb.quant_state.invalid", found[0], f"{quote(found[0])} is {entry.dtype}{list(entry.shape)}, "
                                 f"not a uint8 JSON blob of at most {_MAX_STATE_BYTES} bytes"))
        else:
            what = "none" if not found else ", ".join(quote(n) for n in found)
            issues.append(_issue("load.bnb.quant_state.missing" if not found else "load.bnb.quant_state.invalid", f"{name}.{_QUANT_STATE}",
                                 f"{quote(name)} is stored 4-bit, with {what} of its quantization state "
                                 f"({_QUANT_STATE}nf4 or fp4; exactly one)", "the checkpoint is incomplete or was edited"))
        _as_stored(expected, checkpoint, [*found, *(f"{name}.{s}" for s in ("weight", *_FOUR_BIT_SUFFIXES))])
    raw = _read(checkpoint, list(layer_states.values()))  # at most a few KiB each, checked above
    if isinstance(raw, Issue):
        return Err((raw,))
    for name, layer in quantized.items():
        if not four:
            expected[f"{name}.weight"] = _meta(layer, torch.int8)
            expected[f"{name}.SCB"] = _meta((layer[0],), torch.float32)
            if f"{name}.weight_format" in checkpoint.where:
                expected[f"{name}.weight_format"] = _meta((), torch.uint8)
            continue
        assert isinstance(config, Bnb4Bit)
        stored = layer_states.get(name)
        if stored is None:
            continue  # its issue is above
        state = _state(stored, raw[stored], layer, config.quant_type, config)
        expected[stored] = _meta(checkpoint.entry(stored).shape, torch.uint8)
        if isinstance(state, Issue):
            issues.append(state)  # the layer's other tensors cannot be checked without it: one issue, not one per tensor
            _as_stored(expected, checkpoint, [f"{name}.{s}" for s in ("weight", *_FOUR_BIT_SUFFIXES)])
            continue
        expected.update(_four_bit(name, layer, state, config))
    checked = check_expected(expected, checkpoint, tied_targets(model), ignored_unexpected(model))
    if isinstance(checked, Err):
        issues.extend(checked.error)
    else:  # bitsandbytes' statistics are float32 exactly (an fp16 SCB loads, then the first forward raises)
        issues.extend(_issue("load.tensor.dtype", n, f"{quote(n)} is {checkpoint.entry(n).dtype}; bitsandbytes reads float32 (F32)")
                      for n in sorted(expected) if _float32_stat(n, expected[n], quantized) and checkpoint.entry(n).dtype != "F32")
    if issues:
        return Err(tuple(issues[:100]))
    values = _values(checkpoint, quantized, four)
    if values:
        return Err(values)
    return Ok(frozenset(quantized))


def _values(checkpoint: Checkpoint, quantized: Mapping[str, tuple[int, int]], four: bool) -> Issues:
    """What the shapes cannot say, read once they are checked: scales and code maps finite
    (``absmax``, ``quant_map``, their nested ones, ``SCB``; one NaN makes weights NaN), and an
    8-bit ``weight_format`` 0 ("row", the only one bitsandbytes reads: it raises on any other)."""
    stats = ("weight.absmax", "weight.nested_absmax", "weight.quant_map", "weight.nested_quant_map") if four else ("SCB",)
    scales = [f"{n}.{s}" for n in quantized for s in stats]
    floats = [n for n in scales if n in checkpoint.where and checkpoint.entry(n).dtype == "F32"]
    formats = {f"{n}.weight_format" for n in quantized if f"{n}.weight_format" in checkpoint.where}
    issues: list[Issue] = []

    def check(n: str, t: torch.Tensor) -> None:
        if n in formats and int(t) != 0:
            issues.append(_issue("load.bnb.weight_format", n, f"{quote(n)} is {int(t)}; bitsandbytes reads only 0 (row)"))
        elif n not in formats and not bool(t.isfinite().all()):
            issues.append(_issue("load.tensor.not_finite", n, f"{quote(n)} holds a NaN or an infinity",
                                 "a non-finite scale makes its weights NaN: the checkpoint is corrupt"))

    failed = _visit(checkpoint, floats + sorted(formats), check)
    if failed is not None:
        return (failed,)
    return tuple(issues[:100])


def _float32_stat(name: str, expected: torch.Tensor, quantized: Mapping[str, tuple[int, int]]) -> bool:
    """Whether ``name`` is a quantized layer's float32 statistic (``absmax`` unless nested, ``SCB``, the code maps)."""
    owner, _, leaf = name.rpartition(".")
    return leaf in _FLOAT32_STATS and expected.dtype == torch.float32 and owner.removesuffix(".weight") in quantized


def _as_stored(expected: dict[str, torch.Tensor], checkpoint: Checkpoint, names: list[str]) -> None:
    """Expect these tensors as the checkpoint stores them (a layer whose state is already an issue)."""
    for n in names:
        if n in checkpoint.where:
            entry = checkpoint.entry(n)
            expected[n] = _meta(entry.shape, TORCH_DTYPES.get(entry.dtype, torch.uint8))


def _loading_info(info: object) -> Issues:
    """Transformers' own report of keys it did not match, as issues (defence in depth: the
    tensors were checked before, so this should be empty)."""
    if not isinstance(info, Mapping):
        return ()
    issues: list[Issue] = []
    for field, code in (("missing_keys", "load.tensor.missing"), ("unexpected_keys", "load.tensor.unexpected"),
                        ("mismatched_keys", "load.tensor.shape"), ("error_msgs", "load.bnb.failed")):
        for item in sorted(info.get(field) or (), key=str)[:50]:
            name = item[0] if isinstance(item, tuple) and item else item
            issues.append(Issue(code, f"$.tensors[{quote(name)}]" if isinstance(name, str) else "$",
                                f"Transformers' load reports {field.replace('_', ' ')[:-1]} {quote(item, 160)}",
                                "the checkpoint does not match the model Transformers built from its config"))
    return tuple(issues)


def _renames_tensors(model: nn.Module, checkpoint: Checkpoint) -> bool:
    """Whether Transformers maps this checkpoint's tensor names onto the model's (its conversion
    mapping: MoE experts stored one by one and fused at load, ``LayerNorm.gamma`` for ``weight``),
    so that they cannot be compared name for name. Unknown (an API change): assumed so."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return True
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping

        if get_model_conversion_mapping(model, add_legacy=False):
            return True
        legacy = get_model_conversion_mapping(model, add_legacy=True)
    except (ImportError, AttributeError, TypeError, ValueError, KeyError):
        return True
    patterns = [str(p) for t in legacy for p in (getattr(t, "source_patterns", None) or ())]
    try:
        found = re.compile("|".join(f"({p})" for p in patterns)) if patterns else None
    except re.error:
        return True
    return found is not None and any(found.search(n) for n in checkpoint.where)


def _bnb_modules(model: nn.Module) -> frozenset[str]:
    from bitsandbytes.nn.modules import Linear4bit, Linear8bitLt

    kinds = (Linear4bit, Linear8bitLt)
    return frozenset(n for n, m in model.named_modules() if isinstance(m, kinds))


def load(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Load a bitsandbytes checkpoint, or quantize a full-precision one while loading: the
    checkpoint's tensors checked first (``check_bnb_checkpoint``, or for a full-precision one the
    dense check every loader does), then Transformers' load, whose report must be clean."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    plan = request.plan
    config = plan.config
    if not isinstance(config, AbstractBnb):
        return Err((Issue("load.backend.mismatch", "$", f"bitsandbytes cannot load {type(config).__name__}"),))
    skeleton = build_skeleton(request.directory, plan, trust_remote_code=request.trust_remote_code, stored_bytes=request.checkpoint.nbytes)
    if isinstance(skeleton, Err):
        return skeleton
    quantized: frozenset[str] | None = None
    if _renames_tensors(skeleton.value, request.checkpoint):
        pass  # the names are Transformers' to map (fused MoE experts, legacy names): its own report below is the check
    elif plan.pre_quantized:
        checked = check_bnb_checkpoint(skeleton.value, request.checkpoint, config)
        if isinstance(checked, Err):
            return checked
        quantized = checked.value
    else:
        dense = check_expected(dict(skeleton.value.state_dict(keep_vars=True)), request.checkpoint, tied_targets(skeleton.value),
                               ignored_unexpected(skeleton.value))
        if isinstance(dense, Err):
            return dense
    del skeleton
    kwargs: dict[str, object] = {}
    if not plan.pre_quantized:
        kwargs["quantization_config"] = BitsAndBytesConfig.from_dict(dump(config, style="transformers"))
    quiet_import("bitsandbytes")  # its import prints a note about a kernel hub it cannot reach: logged instead
    try:
        with warnings.catch_warnings(), transformers_progress_off():
            warnings.simplefilter("ignore")  # bitsandbytes' notes about casting fp32 inputs
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                request.directory, device_map=request.device_map or {"": plan.device.label}, dtype=getattr(torch, plan.dtype.value),
                max_memory=dict(request.max_memory) if request.max_memory else None,
                offload_folder=str(request.offload_folder) if request.offload_folder else None,
                trust_remote_code=request.trust_remote_code, output_loading_info=True, **kwargs,
            )
    except (ValueError, KeyError, OSError, RuntimeError, TypeError, ImportError, AssertionError, IndexError) as e:
        return Err((Issue("load.bnb.failed", "$", f"bitsandbytes could not load the checkpoint: {quote(str(e), 240)}"),))
    model: nn.Module = loaded[0]
    info: object = loaded[1]
    reported = _loading_info(info)
    if reported:
        return Err(reported)
    if quantized is not None and _bnb_modules(model) != quantized:
        built = _bnb_modules(model)
        odd = sorted(built ^ quantized)
        return Err(tuple(Issue("load.bnb.layout", f"$.modules[{quote(n)}]",
                               f"{quote(n)} is stored {'dense' if n in built else 'quantized'}, but Transformers built it "
                               f"{'quantized' if n in built else 'dense'} from the config", "the config's skipped modules do not match "
                               "the checkpoint") for n in odd[:50]))
    model.eval()
    return Ok((model, request.checkpoint.nbytes))
