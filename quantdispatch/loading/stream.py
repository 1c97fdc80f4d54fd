"""The execute step shared by the loaders: a skeleton on the meta device, quantized modules in
place of the linear layers the checkpoint stores packed, every tensor checked against what the
model expects before any is read, then the weights streamed in file by file.

Everything it knows about a packing comes from the layout's declarations
(``quantdispatch.layouts``): the marker tensor that says a layer is stored packed, how to read a
stored layer's output width, which tensors may be derived, which index others and which must be
finite. No method is named here.

All-or-nothing: a missing, unexpected or mis-shaped tensor is an ``Err`` naming the tensor and its
file, and the half-built model is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import torch
from torch import nn

from ..architecture import BUILD_ERRORS, check_architecture
from ..fileio import read_bounded
from ..kernels._common import TORCH_DTYPES as TORCH_DTYPES
from ..layouts.base import AbstractLayout
from ..plan import LoadPlan
from ..result import Err, Issue, Issues, Ok, Result
from ..text import quote
from .checkpoint import Checkpoint
from .request import LoadRequest
from .safetensors import TensorEntry, read_safetensors

__all__ = ["ModuleFactory", "WholeFactory", "PostLoad", "Replaced", "TORCH_DTYPES", "finish", "build_skeleton", "replace_linears",
           "check_tensors", "check_expected",
           "check_values", "tied_targets", "ignored_unexpected", "refusal_issues", "stream_weights", "load_streamed"]

ModuleFactory = Callable[[str, nn.Linear], nn.Module]
"""Makes the quantized module (on the meta device) that replaces one linear layer."""
WholeFactory = Callable[[str, nn.Module], nn.Module]
"""Makes the quantized module (on the meta device) that replaces one whole module, for a layout
that stores such (``whole_modules``: stacked experts); raises ``ValueError`` for a module it cannot take."""

_IGNORED_UNEXPECTED = (".rotary_emb.inv_freq",)  # older checkpoints saved this buffer; it is recomputed


def _issue(code: str, message: str, hint: str | None = None, path: str = "$") -> Issue:
    return Issue(code, path, message, hint)


def _config_json(directory: Path) -> dict[str, Any] | Issue:
    raw = read_bounded(directory / "config.json", 16 * 1024 * 1024)
    if isinstance(raw, Issue):
        return raw
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return _issue("load.config.invalid", "config.json is not valid JSON")
    return value if isinstance(value, dict) else _issue("load.config.invalid", "config.json is not a JSON object")


def build_skeleton(directory: Path, plan: LoadPlan, *, trust_remote_code: bool, stored_bytes: int | None = None) -> Result[nn.Module, Issues]:
    """The model of ``config.json`` with its parameters on the meta device (buffers that the
    model computes itself, such as rotary ``inv_freq``, are real), in the plan's dtype.

    The architecture numbers are checked first (``quantdispatch.architecture``), and against
    ``stored_bytes``, the weight files' tensor bytes, when given: nothing is built for numbers
    Transformers cannot build or files that cannot hold them."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    raw = _config_json(directory)
    if isinstance(raw, Issue):
        return Err((raw,))
    model_type = raw.get("model_type")
    if "auto_map" in raw and (not isinstance(model_type, str) or model_type not in CONFIG_MAPPING) and not trust_remote_code:
        return Err((_issue("load.remote_code.refused", f"the architecture ({quote(model_type)}) is defined by code inside the checkpoint",
                           "read that code, then pass trust_remote_code=True to run it"),))
    checked = check_architecture(raw, None if "auto_map" in raw else stored_bytes)  # remote code may count otherwise
    if checked:
        return Err(checked)
    try:
        config = AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # we place the quantized modules ourselves
        # Every parameter comes from the checkpoint: Transformers' random initialization of the
        # meta parameters is skipped (it cost ~40 ms a load on a small llama, for nothing).
        with init_empty_weights(include_buffers=False), no_init_weights():
            model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, plan.dtype.value),
                                                     trust_remote_code=trust_remote_code)
    except BUILD_ERRORS as e:  # behind check_architecture: numbers it let through must not escape as a crash
        return Err((_issue("load.architecture.unsupported", f"Transformers cannot build this model: {type(e).__name__}: {quote(str(e), 200)}",
                           "check config.json's model_type and architectures"),))
    return Ok(model)


SPLITS: dict[str, tuple[str, ...]] = {"gate_up_proj": ("gate_proj", "up_proj"), "qkv_proj": ("q_proj", "k_proj", "v_proj")}
"""Fused projections and the separate ones a quantizer may save instead (Phi-3's ``gate_up_proj``
written as ``gate_proj`` + ``up_proj``)."""


class SplitLinear(nn.Module):
    """A fused projection stored as separate quantized parts: the parts' outputs, concatenated in
    order, are the fused layer's output."""

    def __init__(self, parts: dict[str, nn.Module]) -> None:
        super().__init__()
        for child, module in parts.items():
            self.add_module(child, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(x) for part in self.children()], dim=-1)


def _split_parts(name: str, module: nn.Linear, checkpoint: Checkpoint, layout: AbstractLayout) -> dict[str, int] | None:
    """The separate parts a fused projection is stored as, each with its output width, or ``None``."""
    parent, _, child = name.rpartition(".")
    parts = SPLITS.get(child)
    prefix = f"{parent}." if parent else ""
    if parts is None or f"{name}.{layout.marker}" in checkpoint.where or f"{name}.weight" in checkpoint.where:
        return None
    if not all(f"{prefix}{p}.{layout.marker}" in checkpoint.where for p in parts):
        return None
    widths = {p: layout.out_features(_stored_shapes(checkpoint, f"{prefix}{p}")) for p in parts}
    if any(w is None or w <= 0 for w in widths.values()):
        return None  # not a split this layout can read; the tensor check names the stray parts
    found = {p: w for p, w in widths.items() if w is not None}
    return found if sum(found.values()) == module.out_features else None


def _stored_shapes(checkpoint: Checkpoint, prefix: str) -> dict[str, tuple[int, ...]]:
    """The shapes of one stored layer's tensors, by name suffix (read from the headers)."""
    start = f"{prefix}."
    return {n[len(start):]: tuple(checkpoint.entry(n).shape) for n in checkpoint.where if n.startswith(start) and "." not in n[len(start):]}


M = TypeVar("M", bound=nn.Module)


def _made(make: Callable[[str, M], nn.Module], name: str, module: M) -> nn.Module | Issue:
    """``make``'s module for one layer, or the issue naming the layer whose shape its packing cannot hold."""
    try:
        return make(name, module)
    except ValueError as e:  # the layout's shape rules (its tensors() answered Unpackable)
        shape = f"{module.in_features} -> {module.out_features}" if isinstance(module, nn.Linear) else type(module).__name__
        return _issue("load.layer.shape", f"{quote(name)} ({shape}): {quote(str(e), 200)}",
                      "this layer's shape cannot be stored in the configured packing: the config does not fit the model",
                      f"$.modules[{quote(name)}]")


def _sizes(module: nn.Module) -> tuple[int, int]:
    """A replacing module's ``(in_features, out_features)`` (0 where it does not say them)."""
    found = (getattr(module, "in_features", 0), getattr(module, "out_features", 0))
    return (found[0] if isinstance(found[0], int) else 0, found[1] if isinstance(found[1], int) else 0)


@attrs.frozen
class Replaced:
    """What ``replace_linears`` did.

    Attributes:
        renames: The model's tensor names that the checkpoint spells otherwise (a split part's
            ``mlp.gate_up_proj.gate_proj.scales`` is stored as ``mlp.gate_proj.scales``).
        layers: Each replaced module's name in the model, with its (in_features, out_features).
    """

    renames: dict[str, str] = attrs.field(factory=dict)
    layers: dict[str, tuple[int, int]] = attrs.field(factory=dict)


def replace_linears(model: nn.Module, checkpoint: Checkpoint, layout: AbstractLayout, make: ModuleFactory,
                    whole: WholeFactory | None = None) -> Result[Replaced, Issues]:
    """Swap each ``nn.Linear`` the checkpoint stores in ``layout`` (its ``marker`` tensor is there)
    for the module ``make`` builds, each other module so stored for the one ``whole`` builds (a
    layout that stores whole modules), and each fused projection stored as separate parts for a
    ``SplitLinear`` of them; or an issue for each layer whose shape the layout cannot hold
    (``make`` or ``whole`` raised ``ValueError``)."""
    done = Replaced()
    issues: list[Issue] = []
    for name, module in list(model.named_modules()):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if not isinstance(module, nn.Linear):
            # A layout that stores whole modules (stacked experts): the module whose marker is stored.
            if whole is not None and layout.whole_modules and name and f"{name}.{layout.marker}" in checkpoint.where:
                made = _made(whole, name, module)
                if isinstance(made, Issue):
                    issues.append(made)
                else:
                    setattr(parent, child, made)
                    done.layers[name] = _sizes(made)
            continue
        if f"{name}.{layout.marker}" in checkpoint.where:
            made = _made(make, name, module)
            if isinstance(made, Issue):
                issues.append(made)
            else:
                setattr(parent, child, made)
                done.layers[name] = (module.in_features, module.out_features)
            continue
        parts = _split_parts(name, module, checkpoint, layout)
        if parts is None:
            continue
        prefix = f"{parent_name}." if parent_name else ""
        built: dict[str, nn.Module] = {}
        for part, width in parts.items():
            piece = nn.Linear(module.in_features, width, bias=f"{prefix}{part}.bias" in checkpoint.where, device="meta")
            made = _made(make, f"{prefix}{part}", piece)
            if isinstance(made, Issue):
                issues.append(made)
            else:
                built[part] = made
        if len(built) < len(parts):
            continue
        setattr(parent, child, SplitLinear(built))
        for part, quantized in built.items():
            done.layers[f"{name}.{part}"] = (module.in_features, parts[part])
            for tensor_name in quantized.state_dict(keep_vars=True):
                done.renames[f"{name}.{part}.{tensor_name}"] = f"{prefix}{part}.{tensor_name}"
    if issues:
        return Err(tuple(issues[:100]))
    return Ok(done)


def check_values(model: nn.Module, checkpoint: Checkpoint, layout: AbstractLayout, replaced: Replaced) -> Result[None, Issues]:
    """Check the loaded values the layout declares for each replaced layer: index tensors
    (``indexes``: tensor -> (indexed tensor, its size); a group index picks a row of the
    scales) hold only values in ``[0, size)``, ``finite`` tensors (scales) no NaN or
    infinity (integer ones read through ``views``), signed ones (``signs``) no value on the wrong side of zero, and shape-fixed ones
    (``fixed``: a stored ``[N, K]``) the layer's sizes. Run after the
    weights are read and before anything (a forward, a kernel's ``prepare``) uses them: an
    index out of range would raise at the first forward, or, negative, silently read the wrong
    group; one non-finite scale makes every output of its layer NaN."""
    renames = replaced.renames
    issues: list[Issue] = []

    def located(module_name: str, buffer_name: str) -> tuple[str, str]:
        full = f"{module_name}.{buffer_name}" if module_name else buffer_name
        stored = renames.get(full, full)
        return stored, Path(checkpoint.where[stored]).name if stored in checkpoint.where else "the checkpoint"

    finite = sorted(layout.finite())
    views = {name: TORCH_DTYPES[code] for name, code in layout.views().items() if code in TORCH_DTYPES}
    for module_name, (in_features, out_features) in replaced.layers.items():
        module = model.get_submodule(module_name)
        for buffer_name, (target, size) in layout.indexes(in_features, out_features).items():
            values = _loaded(module, buffer_name)
            if values is None:
                continue  # not loaded: derived later, or reported missing
            low, high = int(values.min()), int(values.max())
            if 0 <= low and high < size:
                continue
            stored, file = located(module_name, buffer_name)
            bad = low if low < 0 else high
            at = "".join(f"[{int(i)}]" for i in torch.nonzero(values == bad)[0])
            issues.append(_issue("load.tensor.range", f"{quote(stored)}{at} in {file} is {bad}; its values index the {size} "
                                 f"rows of {quote(target)}, so each must be in [0, {size - 1}]",
                                 "the tensor is corrupt, or the config's group size does not match the checkpoint",
                                 f"$.tensors[{quote(stored)}]"))
        for buffer_name in finite:
            values = _loaded(module, buffer_name)
            if values is not None and buffer_name in views and values.element_size() == views[buffer_name].itemsize:
                values = values.view(views[buffer_name])  # integer bytes of a float format (E8M0 scales)
            if values is None or not values.is_floating_point():
                continue
            if values.element_size() == 1:  # torch has no isfinite for 8-bit floats; bfloat16 holds each of their values exactly
                values = values.to(torch.bfloat16)
            if bool(values.isfinite().all()):
                continue
            stored, file = located(module_name, buffer_name)
            first = tuple(int(i) for i in torch.nonzero(~values.isfinite())[0])
            at = "".join(f"[{i}]" for i in first)
            issues.append(_issue("load.tensor.not_finite", f"{quote(stored)}{at} in {file} is {values[first].item()}",
                                 "a NaN or infinite scale (or weight) makes the layer's outputs NaN: the checkpoint is corrupt",
                                 f"$.tensors[{quote(stored)}]"))
        issues.extend(_sign_issues(module, module_name, layout, located))
        issues.extend(_fixed_issues(module, module_name, layout.fixed(in_features, out_features), located))
    if issues:
        return Err(tuple(issues[:100]))
    return Ok(None)


def _sign_issues(module: nn.Module, module_name: str, layout: AbstractLayout,
                 located: Callable[[str, str], tuple[str, str]]) -> list[Issue]:
    """The layout's signed tensors (``signs``) holding a value on the wrong side of zero."""
    found: list[Issue] = []
    for buffer_name, sign in sorted(layout.signs().items()):
        values = _loaded(module, buffer_name)
        if values is None or not values.is_floating_point():
            continue
        wide = values.float()  # 8-bit floats compare through float32
        bad = wide <= 0 if sign == "positive" else wide < 0
        if not bool(bad.any()):
            continue
        stored, file = located(module_name, buffer_name)
        first = tuple(int(i) for i in torch.nonzero(bad)[0])
        found.append(_issue("load.tensor.sign", f"{quote(stored)}{''.join(f'[{i}]' for i in first)} in {file} is "
                            f"{wide[first].item()}; the format stores it {sign}",
                            "a scale of the wrong sign flips or zeroes the layer's weights: the checkpoint is corrupt",
                            f"$.tensors[{quote(stored)}]"))
    return found


def _fixed_issues(module: nn.Module, module_name: str, fixed: Mapping[str, tuple[int, ...]],
                  located: Callable[[str, str], tuple[str, str]]) -> list[Issue]:
    """The layout's shape-fixed tensors (``fixed``: a stored ``[N, K]``) holding other values than the layer's."""
    found: list[Issue] = []
    for buffer_name, expected in sorted(fixed.items()):
        values = _loaded(module, buffer_name)
        if values is None or values.flatten().tolist() == list(expected):
            continue
        stored, file = located(module_name, buffer_name)
        found.append(_issue("load.tensor.value", f"{quote(stored)} in {file} is {values.flatten().tolist()[:8]}; the layer is "
                            f"{list(expected)}", "the stored sizes disagree with the packed tensors: the checkpoint is corrupt "
                            "or was written for another model", f"$.tensors[{quote(stored)}]"))
    return found


def _loaded(module: nn.Module, name: str) -> torch.Tensor | None:
    values = getattr(module, name, None)
    if not isinstance(values, torch.Tensor) or values.device.type == "meta" or values.numel() == 0:
        return None
    return values


def tied_targets(model: nn.Module) -> set[str]:
    """The tensor names a tied-embeddings model may leave out of its checkpoint (Transformers ties them)."""
    config = getattr(model, "config", None)
    if not getattr(config, "tie_word_embeddings", False):
        return set()
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return set(tied) if isinstance(tied, dict) else set(tied)


def _accepts(expected: torch.Tensor, found: torch.dtype) -> bool:
    # Any float reads exactly as a wider one; an 8-bit float is a format's stored code (a block
    # scale in 8 bits), read only as declared.
    if expected.dtype.is_floating_point and expected.dtype.itemsize > 1:
        return found.is_floating_point
    return found == expected.dtype  # an 8-bit float's bytes mean something in its own format only


def check_tensors(model: nn.Module, checkpoint: Checkpoint, layout: AbstractLayout | None = None,
                  replaced: Replaced | None = None) -> Result[tuple[str, ...], Issues]:
    """Compare what the model expects with what the checkpoint holds, before reading any weight:
    every missing, unexpected, mis-shaped or wrongly typed tensor is an issue naming it and its
    file. A tensor the layout declares derivable (a trivial group index) may be
    missing from a replaced layer. Returns the names to load (the checkpoint's spelling of each
    is ``replaced.renames`` applied)."""
    replaced = replaced or Replaced()
    renames = replaced.renames
    expected = {renames.get(n, n): t for n, t in model.state_dict(keep_vars=True).items()}
    derivable = layout.derivable() if layout is not None else frozenset()
    optional = {renames.get(f"{n}.{b}", f"{n}.{b}") for n in replaced.layers for b in derivable}
    found = check_expected(expected, checkpoint, tied_targets(model) | optional, _ignored(model, layout, replaced))
    if isinstance(found, Err):
        return found
    back = {v: k for k, v in renames.items()}
    return Ok(tuple(back.get(n, n) for n in found.value))


def _ignored(model: nn.Module, layout: AbstractLayout | None, replaced: Replaced) -> re.Pattern[str] | None:
    """``ignored_unexpected``, and the tensors the layout says a stored layer may hold unused
    (``layout.unused()``), under each replaced layer's stored name."""
    architecture = ignored_unexpected(model)
    unused = sorted(layout.unused()) if layout is not None else []
    if not unused or not replaced.layers:
        return architecture
    marker = layout.marker if layout is not None else ""
    stored = sorted(replaced.renames.get(f"{n}.{marker}", f"{n}.{marker}").removesuffix(f".{marker}") for n in replaced.layers)
    names = "|".join(re.escape(f"{prefix}.{suffix}") for prefix in stored for suffix in unused)
    pattern = f"^({names})$" if architecture is None else f"^({names})$|{architecture.pattern}"
    return re.compile(pattern)


def ignored_unexpected(model: nn.Module) -> re.Pattern[str] | None:
    """The checkpoint tensors the architecture itself says to drop, as Transformers does
    (``_keys_to_ignore_on_load_unexpected``: GPT-2's old ``attn.bias`` masks), or ``None``. Only
    unexpected ones: a missing tensor is never excused this way (Transformers would leave it random)."""
    declared = getattr(model, "_keys_to_ignore_on_load_unexpected", None)
    patterns = {str(p) for p in declared} if isinstance(declared, (set, list, tuple)) else set()
    if any(name.endswith("position_ids") for name, _ in model.named_buffers()):
        patterns.add(r"(^|\.)position_ids$")  # once a persistent buffer, now computed (Transformers drops it too)
    return re.compile("|".join(f"({p})" for p in sorted(patterns))) if patterns else None


def check_expected(expected: Mapping[str, torch.Tensor], checkpoint: Checkpoint, optional: Collection[str] = (),
                   ignored: re.Pattern[str] | None = None) -> Result[tuple[str, ...], Issues]:
    """``check_tensors`` for a list of expected tensors (meta tensors will do: only their shapes
    and dtypes are read), by the checkpoint's names; those in ``optional`` may be missing, and
    unexpected ones that ``ignored`` matches (``ignored_unexpected``) are not read. A floating
    tensor of 16 bits or more may be stored in any floating dtype, any other (an 8-bit float, an
    integer) only in its own. Returns the expected
    names the checkpoint holds."""
    issues: list[Issue] = []
    for name, tensor in expected.items():
        if name not in checkpoint.where:
            if name not in optional:
                issues.append(_issue("load.tensor.missing", f"the model needs {quote(name)}, which no weight file holds",
                                     "the checkpoint is incomplete, or was saved for another architecture or config", f"$.tensors[{quote(name)}]"))
            continue
        entry = checkpoint.entry(name)
        found = TORCH_DTYPES.get(entry.dtype)
        file = Path(checkpoint.where[name]).name
        if tuple(entry.shape) != tuple(tensor.shape):
            issues.append(_issue("load.tensor.shape", f"{quote(name)} in {file} has shape {list(entry.shape)}, the model "
                                 f"expects {list(tensor.shape)}", "the config (bits, group size, packing) does not match the tensors",
                                 f"$.tensors[{quote(name)}]"))
        elif found is None or not _accepts(tensor, found):
            issues.append(_issue("load.tensor.dtype", f"{quote(name)} in {file} is {entry.dtype}, the model expects {tensor.dtype}",
                                 None, f"$.tensors[{quote(name)}]"))
    for name in checkpoint.where:
        if name not in expected and not name.endswith(_IGNORED_UNEXPECTED) and not (ignored is not None and ignored.search(name)):
            file = Path(checkpoint.where[name]).name
            issues.append(_issue("load.tensor.unexpected", f"{file} holds {quote(name)}, which the model has no place for",
                                 "the checkpoint was saved for another architecture or quantization config", f"$.tensors[{quote(name)}]"))
    if issues:
        return Err(tuple(issues[:100]) + ((_issue("load.issues.too_many", f"{len(issues) - 100} more"),) if len(issues) > 100 else ()))
    return Ok(tuple(n for n in expected if n in checkpoint.where))


def stream_weights(model: nn.Module, checkpoint: Checkpoint, names: Iterable[str], dtype: torch.dtype,
                   progress: Callable[[int, int], None] | None = None, replaced: Replaced | None = None) -> Result[int, Issues]:
    """Read the named tensors file by file (memory-mapped) into the model on the CPU; floating
    parameters in ``dtype``, the replaced layers' tensors (codes, scales) as stored. Returns bytes read."""
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import SafetensorError, safe_open

    replaced = replaced or Replaced()
    renames = replaced.renames
    by_file: dict[str, list[str]] = {}
    for name in names:
        by_file.setdefault(checkpoint.where[renames.get(name, name)], []).append(name)
    packed = set(replaced.layers)
    done, total, read = 0, len(checkpoint.files), 0
    for path, tensor_names in by_file.items():
        try:
            with _opened(path, checkpoint, safe_open) as f:
                for name in tensor_names:
                    stored = renames.get(name, name)
                    t = f.get_tensor(stored)
                    changed = _differs(t, checkpoint.entry(stored))
                    if changed is not None:
                        return Err((_issue("load.file.changed", f"{Path(path).name}: {quote(stored)} {changed}",
                                           "the file was rewritten while it was loaded; load it again", f"$.tensors[{quote(stored)}]"),))
                    read += t.numel() * t.element_size()
                    keep = name.rpartition(".")[0] in packed  # packed layers keep their own dtypes
                    if t.is_floating_point() and not keep and t.dtype != dtype:
                        t = t.to(dtype)
                    # A replaced layer's tensors stay as stored: accelerate would otherwise cast a float
                    # one to the buffer's declared dtype (float32 scales to float16).
                    set_module_tensor_to_device(model, name, "cpu", value=t, dtype=t.dtype if keep else None)
        except SafetensorError as e:
            return Err(refusal_issues(Path(path), e))
        except OSError as e:
            return Err((_issue("load.file.unreadable", f"{Path(path).name}: {quote(str(e), 200)}",
                               "the file changed or vanished while it was read"),))
        except (RuntimeError, ValueError) as e:  # defensive: every tensor was checked against the model before
            return Err((_issue("load.tensor.unplaceable", f"{Path(path).name}: {quote(str(e), 200)}",
                               "the checked tensors did not fit the model; please report this"),))
        done += 1
        if progress is not None:
            progress(done, total)
    return Ok(read)


def _differs(t: torch.Tensor, entry: TensorEntry) -> str | None:
    """How a tensor as read differs from its checked header entry (``None``: it does not)."""
    if tuple(t.shape) != entry.shape or TORCH_DTYPES.get(entry.dtype, t.dtype) != t.dtype:
        return f"was checked as {entry.dtype}{list(entry.shape)} and read as {t.dtype}{list(t.shape)}"
    return None


def refusal_issues(path: Path, error: Exception) -> Issues:
    """The safetensors library refused a file our header check accepted: the file changed since
    (its header, checked again, says why), or the two readers disagree."""
    again = read_safetensors(path)
    if isinstance(again, Err):
        return tuple(attrs.evolve(i, hint="the file changed after its header was checked") for i in again.error)
    return (_issue("load.file.refused", f"{path.name}: the safetensors library refused it: {quote(str(error), 200)}",
                   "quantdispatch's header check accepted this file; please report it with the file's header"),)


def dispatch(model: nn.Module, request: LoadRequest) -> Result[nn.Module, Issues]:
    """Place a CPU-loaded model as ``request.device_map`` says, through accelerate: CPU, GPUs, and
    ``"disk"`` (weights and packed buffers written to ``offload_folder``, read back per forward)."""
    from accelerate import dispatch_model, infer_auto_device_map

    wanted = request.device_map
    if wanted is None:
        return Ok(model)
    no_split = list(getattr(model, "_no_split_modules", None) or [])
    try:
        if wanted == "auto":
            budget = dict(request.max_memory) if request.max_memory else None
            device_map = dict(infer_auto_device_map(model, max_memory=budget, no_split_module_classes=no_split))
        elif isinstance(wanted, str):
            device_map = {"": wanted}
        else:
            device_map = dict(wanted)
        names = {n for n, _ in model.named_modules()}
        unknown = [k for k in device_map if k not in names]
        if unknown:
            return Err((_issue("load.device_map.module", f"the device map names {quote(unknown[0])}, which the model does not have"),))
        if "disk" in device_map.values() and request.offload_folder is None:
            return Err((_issue("load.device_map.offload_folder", "the device map offloads to disk but no offload_folder was given"),))
        devices = [d for d in device_map.values() if d not in ("cpu", "disk")]
        main = f"cuda:{devices[0]}" if devices and isinstance(devices[0], int) else (str(devices[0]) if devices else "cpu")
        if set(device_map.values()) <= {"cpu"}:
            return Ok(model)  # already there
        dispatch_model(model, device_map=device_map, main_device=main,
                       offload_dir=str(request.offload_folder) if request.offload_folder else None, offload_buffers=True)
    except (ValueError, KeyError, RuntimeError, OSError, TypeError, AssertionError) as e:
        return Err((_issue("load.device_map.invalid", f"accelerate cannot place the model: {quote(str(e), 200)}",
                           "device_map takes 'auto', 'cpu', a device, or a dict of module name to device / 'cpu' / 'disk'"),))
    return Ok(model)


class _Unpickled:
    """The safetensors reader's interface over tensors already unpickled (``allow_pickle``)."""

    def __init__(self, tensors: Any) -> None:
        self._tensors = tensors

    def get_tensor(self, name: str) -> torch.Tensor:
        t: torch.Tensor = self._tensors[name]
        return t

    def __enter__(self) -> _Unpickled:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _opened(path: str, checkpoint: Checkpoint, safe_open: Any) -> Any:
    return _Unpickled(checkpoint.unpickled) if checkpoint.unpickled is not None else safe_open(path, framework="pt")


PostLoad = Callable[[nn.Module, tuple[str, ...]], object]
"""Runs once the weights are in and checked, before tying and placement, with the names of the
replaced layers: a kernel's ``prepare`` swaps each portable layer for its own module there
(``quantdispatch.loading.layered``), one at a time."""


def load_streamed(request: LoadRequest, layout: AbstractLayout | None, make: ModuleFactory | None,
                  post_load: PostLoad | None = None, whole: WholeFactory | None = None) -> Result[tuple[nn.Module, int], Issues]:
    """Skeleton, module swap, checks, streaming, ``post_load``, tying, the device: the whole execute
    step, for the layers ``layout`` declares (``None``: a dense checkpoint); ``whole`` makes the
    modules a layout that stores whole modules replaces."""
    directory, checkpoint, plan = request.directory, request.checkpoint, request.plan
    built = build_skeleton(directory, plan, trust_remote_code=request.trust_remote_code, stored_bytes=checkpoint.nbytes)
    if isinstance(built, Err):
        return built
    model = built.value
    swapped = replace_linears(model, checkpoint, layout, make, whole) if layout is not None and make is not None else Ok(Replaced())
    if isinstance(swapped, Err):
        return swapped
    replaced = swapped.value
    names = check_tensors(model, checkpoint, layout, replaced)
    if isinstance(names, Err):
        return names
    read = stream_weights(model, checkpoint, names.value, getattr(torch, plan.dtype.value), request.progress, replaced)
    if isinstance(read, Err):
        return read
    if layout is not None:
        in_range = check_values(model, checkpoint, layout, replaced)
        if isinstance(in_range, Err):
            return in_range
        derived = _derive(model, layout, replaced)
        if derived is not None:
            return Err((derived,))
        _settle(model, replaced)
    if post_load is not None:
        try:
            post_load(model, tuple(replaced.layers))
        except (ValueError, RuntimeError, NotImplementedError) as e:  # a kernel's prepare: checked shapes should never get here
            return Err((_issue("load.repack.failed", f"{plan.backend.name} could not repack the loaded layers: "
                               f"{type(e).__name__}: {quote(str(e), 200)}", "choose the portable backend (torch-packed)"),))
    return finish(model, request, read.value)


def _derive(model: nn.Module, layout: AbstractLayout, replaced: Replaced) -> Issue | None:
    """Let each replaced module compute the tensors its layout declares derivable and the
    checkpoint left out (``derive_missing``)."""
    if not layout.derivable():
        return None
    for name in replaced.layers:
        derive = getattr(model.get_submodule(name), "derive_missing", None)
        if not callable(derive):
            return _issue("load.layout.derive", f"{quote(name)}: its layout declares derivable tensors, and its module cannot derive them")
        derive()
    return None


def _settle(model: nn.Module, replaced: Replaced) -> None:
    """Let each replaced module decide what its loaded values make fixed (``after_load``: a
    module that would otherwise inspect its tensors at every call)."""
    for name in replaced.layers:
        settle = getattr(model.get_submodule(name), "after_load", None)
        if callable(settle):
            settle()


_TIE_HINT: Final = "set tie_word_embeddings to false in config.json if the checkpoint stores its own output layer"


def finish(model: nn.Module, request: LoadRequest, read: int, *, missing: str = "{name} was never loaded",
           tie_hint: str | None = _TIE_HINT) -> Result[tuple[nn.Module, int], Issues]:
    """The end of every load, whatever the source: tie a dense output layer, check that nothing
    is left on the meta device, place. ``missing`` words the issue of a tensor never loaded
    (``{name}``: its quoted name) and ``tie_hint`` the hint of a failed tie, for the source."""
    plan = request.plan
    tie = getattr(model, "tie_weights", None)
    # A tied layer the checkpoint stores quantized was swapped for a packed module: its stored
    # weights are used, and there is no dense weight to tie (an external module may refuse one).
    dense = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    if tied_targets(model) & dense and callable(tie):
        try:
            tie()
        except (KeyError, AttributeError, RuntimeError, ValueError, TypeError) as e:  # Transformers' tying, on modules we swapped
            return Err((_issue("load.tie.failed", f"the config ties the output embedding to the input one, and Transformers could "
                               f"not tie them: {type(e).__name__}: {quote(str(e), 200)}", tie_hint),))
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.device.type == "meta"]
    if left:
        return Err(tuple(_issue("load.tensor.missing", missing.format(name=quote(n)), None, f"$.tensors[{quote(n)}]")
                         for n in left[:20]))
    model.eval()
    if request.device_map is not None:
        placed = dispatch(model, request)
        if isinstance(placed, Err):
            return placed
    elif plan.device.label != "cpu":
        model.to(plan.device.label)
    else:
        from ..kernels.dense_native import use_gemv

        use_gemv(model)  # large dense bf16 layers (an unquantized output layer) decode on the native bf16 kernel
    return Ok((model, read))
