"""Loaders of the ``torch-gguf`` (dequantize at load) and ``torch-gguf-packed`` (keep each weight
packed) backends: a ``.gguf`` file, or its shards, into a Transformers model.

What is GGUF's own: the file's metadata becomes the ``config.json`` Transformers would build
(``gguf.arch``), each tensor name the model's (``hf_tensor_name``), what llama.cpp's converter did
is undone (the q/k row permutation, on the raw rows so both modes share it, and Gemma's ``1 + w``
norms), and the blocks become packed or dense modules. The generic steps are ``loading.stream``'s:
the check of every tensor before any is read (``check_expected``) and the end of the load (``finish``: tie, nothing left on meta, place).
The shards are mapped from the request's ``GgufSource``, whose headers were read once, to plan.
All-or-nothing: a tensor with no place, a missing or mis-shaped one is an issue naming it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
import torch
from torch import nn

from ..architecture import BUILD_ERRORS
from ..gguf.arch import (
    ARCHITECTURES,
    ArchSpec,
    block_count_issues,
    fused_parts,
    hf_config,
    hf_tensor_name,
    metadata_issues,
    metadata_path,
    unpermute_rows,
)
from ..gguf.data import GgufData, TensorData, map_gguf_data
from ..gguf.header import GgufValue
from ..gguf.types import GgmlType
from ..kernels.gguf.dequant import OUTPUT_DTYPES, dequantize
from ..kernels.gguf.export import as_uint8
from ..kernels.gguf.modules import GgufEmbedding, GgufExperts, PackedLinearFactory, packed_linear
from ..loading.checkpoint import Checkpoint
from ..loading.request import LoadRequest
from ..loading.safetensors import SafetensorsFile, TensorEntry
from ..loading.source import GgufShard, GgufSource
from ..loading.stream import check_expected, finish, ignored_unexpected, tied_targets
from ..result import Err, Issue, Issues, Ok, Result
from ..text import quote

__all__ = ["load_dequantized", "load_packed", "load_packed_matvec", "load_packed_q8dot", "gguf_metadata", "transformers_config"]

Preferred = Mapping[GgmlType, PackedLinearFactory]
"""The packed linear modules a backend prefers by block type (empty: ``GgufLinear`` for all)."""


def _keeps(t: GgmlType) -> bool:
    """Whether a weight of type ``t`` stays packed: everything but F32, whose blocks are the dense weight
    (F16 and BF16 stay half the size, cast per call)."""
    return t is not GgmlType.F32


Parts = tuple[tuple[str, TensorData], ...]
"""The GGUF tensors (name, data) that make one Transformers tensor, in order along its rows."""

_IGNORED = frozenset({"rope_freqs.weight"})  # llama.cpp's precomputed rotary factors; Transformers recomputes them


def _issue(code: str, message: str, hint: str | None = None, path: str = "$") -> Issue:
    return Issue(code, path, message, hint)


def load_dequantized(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Every tensor dequantized once, to the plan's dtype, into the ordinary Transformers model."""
    return _load(request, packed=None)


def load_packed(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Quantized linear and embedding weights kept as GGML blocks (``GgufLinear``, ``GgufEmbedding``)."""
    return _load(request, packed={})


def load_packed_matvec(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Kept packed, with the fused matrix-vector kernels (``GgufMatvecLinear``) for the types they take."""
    from ..kernels.gguf.matvec import matvec_linears

    return _load(request, packed=matvec_linears("float32"))


def load_packed_q8dot(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Kept packed, with the fused kernels in llama.cpp's arithmetic (8-bit activations)."""
    from ..kernels.gguf.matvec import matvec_linears

    return _load(request, packed=matvec_linears("int8"))


Headed = GgufShard | GgufData
"""A file of a GGUF model with its header read: a shard of a source, or an open file."""


def gguf_metadata(files: Sequence[Headed]) -> dict[str, GgufValue]:
    """The metadata of a model's first (or only) file: the one that describes it."""
    return dict(files[0].header.metadata)


def transformers_config(spec: ArchSpec, metadata: Mapping[str, GgufValue], tensors: Mapping[str, TensorData]) -> dict[str, object]:
    """The ``config.json`` keys of the model: the metadata's, the vocabulary size and whether the
    output layer is the embedding (no ``output.weight``)."""
    cfg = hf_config(spec, metadata, _n_vocab(metadata, tensors))
    cfg["tie_word_embeddings"] = "output.weight" not in tensors
    return cfg


def _n_vocab(metadata: Mapping[str, GgufValue], tensors: Mapping[str, TensorData]) -> int | None:
    """The vocabulary size when the metadata has no ``<arch>.vocab_size``: the tokenizer's token
    count, or the embedding's rows."""
    tokens = metadata.get("tokenizer.ggml.tokens")
    embd = tensors.get("token_embd.weight")
    return len(tokens) if isinstance(tokens, tuple) and tokens else (embd.info.shape[-1] if embd is not None else None)


_SHARED_PREFIXES = ("general.architecture", "tokenizer.")


def _shard_conflicts(spec: ArchSpec, files: Sequence[Headed]) -> Issues:
    """Metadata that a later shard states differently from the first: the first describes the
    model, so a shard that says otherwise belongs to another one (or was edited to mislead)."""
    first = files[0].header
    issues: list[Issue] = []
    for f in files[1:]:
        for key, value in f.header.metadata:
            if not key.startswith((*_SHARED_PREFIXES, f"{spec.arch}.")):
                continue
            mine = first.get(key)
            if mine is not None and mine != value:
                issues.append(_issue("load.gguf.metadata.conflict", f"a shard gives {quote(key)} as {quote(value)}, the first "
                                     f"shard as {quote(mine)}", "every shard must come from one model",
                                     metadata_path(key)))
    return tuple(issues[:20])


def _architecture_issues(spec: ArchSpec, files: Sequence[Headed], tensors: Mapping[str, TensorData]) -> Issues:
    """Every check of the architecture's numbers that needs no module: shards that agree, values
    in range, ``block_count`` against the ``blk.N`` tensors, and a size the tensors can hold."""
    metadata = gguf_metadata(files)
    conflicts = _shard_conflicts(spec, files)
    stored = sum(len(t.data) for t in tensors.values())
    return (*conflicts, *metadata_issues(spec, metadata, _n_vocab(metadata, tensors), stored),
            *block_count_issues(spec, metadata, tensors))


def _map_all(source: GgufSource) -> Result[dict[Path, GgufData], Issues]:
    """Each shard's data mapped, from the header read while planning; a shard that is not the
    file whose header was read (``GgufShard.expect``) is ``load.file.changed``."""
    opened: dict[Path, GgufData] = {}
    for shard in source.shards:
        found = map_gguf_data(shard.path, shard.header, expect=shard.expect)
        if isinstance(found, Err):
            for f in opened.values():
                f.close()
            return found
        opened[shard.path] = found.value
    return Ok(opened)


def _tensors(source: GgufSource, files: Mapping[Path, GgufData]) -> Result[dict[str, TensorData], Issues]:
    """The tensor table's rows as views of the mapped shards, by name."""
    out: dict[str, TensorData] = {}
    issues: list[Issue] = []
    for entry in source.tensors:
        info = entry.info
        if entry.nbytes is None or info.ggml_type not in GgmlType._value2member_map_:
            issues.append(_issue("gguf.tensor.type_unsupported", f"tensor {info.name!r} has type id {info.ggml_type}, whose size is unknown",
                                 None, "$.tensors"))
        elif info.name in out:
            issues.append(_issue("load.gguf.tensor.duplicate", f"{quote(info.name)} is stored in two shards"))
        else:
            out[info.name] = TensorData(info, GgmlType(info.ggml_type), files[entry.file].span(entry.start, entry.nbytes))
    return Err(tuple(issues[:100])) if issues else Ok(out)


def _skeleton(cfg: dict[str, object], dtype: torch.dtype) -> Result[nn.Module, Issues]:
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    kw = dict(cfg)
    model_type = str(kw.pop("model_type"))
    try:
        config = AutoConfig.for_model(model_type, **kw)
        with init_empty_weights(include_buffers=False), no_init_weights():  # every weight comes from the file
            model: nn.Module = AutoModelForCausalLM.from_config(config, dtype=dtype)
    except BUILD_ERRORS as e:  # behind metadata_issues: whatever numbers they let through must not escape as a crash
        return Err((_issue("load.architecture.unsupported", f"Transformers cannot build {quote(model_type)}: "
                           f"{type(e).__name__}: {quote(str(e), 200)}"),))
    return Ok(model)


def _raw(spec: ArchSpec, name: str, t: TensorData, cfg: Mapping[str, object]) -> torch.Tensor:
    """The tensor's bytes with llama.cpp's q/k row permutation undone (a copy then; else a view)."""
    raw = as_uint8(t.data)
    part = name.split(".")[2] if name.startswith("blk.") else ""
    if not spec.permutes_qk or part not in ("attn_q", "attn_k"):
        return raw
    heads = cfg.get("num_attention_heads") if part == "attn_q" else cfg.get("num_key_value_heads", cfg.get("num_attention_heads"))
    rows = t.torch_shape[0]
    if not isinstance(heads, int) or heads <= 0 or rows % (2 * heads):
        return raw
    order = torch.tensor(unpermute_rows(rows, heads), dtype=torch.long)
    return raw.reshape(rows, -1).index_select(0, order).reshape(-1)


def _dense(spec: ArchSpec, parts: Parts, shape: tuple[int, ...], dtype: torch.dtype, cfg: Mapping[str, object]) -> torch.Tensor:
    """The parts dequantized (norms less Gemma's offset), stacked along their rows, in ``shape``."""
    out_dtype = torch.float32 if spec.norm_offset or dtype not in OUTPUT_DTYPES else dtype
    pieces = []
    for gname, t in parts:
        w = dequantize(_raw(spec, gname, t, cfg), t.ggml_type, t.torch_shape, out_dtype)
        if spec.norm_offset and gname.endswith("norm.weight"):
            w = w - spec.norm_offset
        pieces.append(w)
    whole = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-2)
    return whole.reshape(shape).to(dtype)


def _load(request: LoadRequest, *, packed: Preferred | None) -> Result[tuple[nn.Module, int], Issues]:
    source = request.gguf
    if source is None or not source.shards:
        return Err((_issue("load.backend.mismatch", "the GGUF backends load .gguf files; this checkpoint has none"),))
    mapped = _map_all(source)
    if isinstance(mapped, Err):
        return mapped
    files = mapped.value
    try:
        return _build(request, source, files, packed=packed)
    finally:
        for f in files.values():
            f.close()  # the map stays alive while kept-packed views of it do


def _build(request: LoadRequest, source: GgufSource, files: Mapping[Path, GgufData], *,
           packed: Preferred | None) -> Result[tuple[nn.Module, int], Issues]:
    metadata = source.metadata
    arch = metadata.get("general.architecture")
    spec = ARCHITECTURES.get(arch) if isinstance(arch, str) else None
    if spec is None:
        return Err((_issue("load.gguf.architecture.unsupported", f"GGUF architecture {quote(arch)} is not one this version loads",
                           "supported: " + ", ".join(sorted(ARCHITECTURES)), '$.metadata["general.architecture"]'),))
    found = _tensors(source, files)
    if isinstance(found, Err):
        return found
    tensors = found.value
    checked = _architecture_issues(spec, source.shards, tensors)
    if checked:
        return Err(checked)
    cfg = transformers_config(spec, metadata, tensors)
    dtype: torch.dtype = getattr(torch, request.plan.dtype.value)
    built = _skeleton(cfg, dtype)
    if isinstance(built, Err):
        return built
    model = built.value
    named = _named(spec, tensors)
    if isinstance(named, Err):
        return named
    values: dict[str, Parts] = {hf: tuple((g, tensors[g]) for g in gnames) for hf, gnames in named.value.items()}
    issues = _check(model, values, source)
    if issues:
        return Err(issues)
    read = sum(len(t.data) for t in tensors.values())
    if packed is not None:
        _keep_packed(model, spec, values, cfg, dtype, packed)
    _set_dense(model, spec, values, cfg, dtype)
    return finish(model, request, read, missing="the model needs {name}, which the GGUF file does not hold", tie_hint=None)


def _named(spec: ArchSpec, tensors: Mapping[str, TensorData]) -> Result[dict[str, tuple[str, ...]], Issues]:
    out: dict[str, tuple[str, ...]] = {}
    issues: list[Issue] = []
    for gname in tensors:
        hf = hf_tensor_name(spec, gname)
        if hf is not None:
            out[hf] = (*out.get(hf, ()), gname)
        elif gname not in _IGNORED:
            issues.append(_issue("load.tensor.unexpected", f"the file holds {quote(gname)}, which a {spec.arch} model has no place for",
                                 "the file was written for another architecture, or by a newer converter", f"$.tensors[{quote(gname)}]"))
    for hf, gnames in out.items():
        order = fused_parts(hf)
        if order:  # stacked experts: llama.cpp's parts, in Transformers' order
            out[hf] = tuple(sorted(gnames, key=lambda g: order.index(g.split(".")[2]) if g.split(".")[2] in order else len(order)))
            if len(gnames) != len(order):
                issues.append(_issue("load.tensor.missing", f"{hf} stacks {', '.join(order)}; the file has {', '.join(gnames)}"))
        elif len(gnames) > 1:
            issues.append(_issue("load.tensor.unexpected", f"{', '.join(gnames)} all map to {hf}"))
    return Err(tuple(issues[:100])) if issues else Ok(out)


def _shape(parts: Parts) -> tuple[int, ...]:
    """The shape of the parts stacked along their rows (dimension -2)."""
    first = parts[0][1].torch_shape
    if len(parts) == 1:
        return tuple(first)
    return (*first[:-2], sum(t.torch_shape[-2] for _, t in parts), first[-1])


def _fits(found: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """Equal, or equal but for dimensions of 1 (llama.cpp stores Qwen2-MoE's ``[1, hidden]`` shared gate as ``[hidden]``)."""
    return found == want or [d for d in found if d != 1] == [d for d in want if d != 1]


def _check(model: nn.Module, values: Mapping[str, Parts], source: GgufSource) -> Issues:
    """``loading.stream.check_expected`` over the file's tensors by the model's names, before any
    is read; each issue names the tensor as the file does too."""
    expected = model.state_dict(keep_vars=True)
    found = check_expected(expected, _as_checkpoint(values, expected, source), tied_targets(model), ignored_unexpected(model))
    stored = {f"$.tensors[{quote(hf)}]": " + ".join(g for g, _ in parts) for hf, parts in values.items()}
    return tuple(attrs.evolve(i, message=f"{i.message} (the file's {stored[i.path]})") if i.path in stored else i
                 for i in (found.error if isinstance(found, Err) else ()))


def _as_checkpoint(values: Mapping[str, Parts], expected: Mapping[str, torch.Tensor], source: GgufSource) -> Checkpoint:
    """The file's tensors as the generic check reads a checkpoint's: by the model's names, each in
    its first part's shard, floating point (as either mode makes them), its parts stacked (a shape
    that differs from the model's only by dimensions of 1 counts as the model's)."""
    stored_in = {e.name: str(e.file) for e in source.tensors}
    where = {hf: stored_in[parts[0][0]] for hf, parts in values.items()}
    entries: dict[str, dict[str, TensorEntry]] = {f: {} for f in where.values()}
    for hf, parts in values.items():
        want = tuple(expected[hf].shape) if hf in expected else None
        shape = want if want is not None and _fits(_shape(parts), want) else _shape(parts)
        entries[where[hf]][hf] = TensorEntry(hf, "F32", shape, 0, 0)
    return Checkpoint(source.paths[0].parent, {f: SafetensorsFile(f, 0, 0, e, {}) for f, e in entries.items()}, where)


def _keep_packed(model: nn.Module, spec: ArchSpec, values: dict[str, Parts], cfg: Mapping[str, object], dtype: torch.dtype,
                 preferred: Preferred) -> None:
    """Swap each linear, embedding and stack of experts whose weights are quantized for its packed
    module (a linear's from ``preferred`` where it has the type); their tensors leave ``values``."""
    embeddings = model.get_input_embeddings()  # type: ignore[operator]
    embed_name = next(n for n, m in model.named_modules() if m is embeddings)
    done: list[str] = []
    for name, module in list(model.named_modules()):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        experts = _packed_experts(module, name, values)
        if experts is not None:
            setattr(parent, child, experts)
            done += [f"{name}.gate_up_proj", f"{name}.down_proj"]
            continue
        parts = values.get(f"{name}.weight")
        if parts is None and name == "lm_head" and cfg["tie_word_embeddings"]:
            parts = values.get(f"{embed_name}.weight")  # the output layer reads the embedding's blocks
        if parts is None or len(parts) != 1 or not _keeps(parts[0][1].ggml_type):
            continue
        gname, t = parts[0]
        raw = _raw(spec, gname, t, cfg)
        if isinstance(module, nn.Linear):
            b = values.pop(f"{name}.bias", None)
            bias = None if b is None else _dense(spec, b, (module.out_features,), dtype, cfg)
            setattr(parent, child, packed_linear(raw, t.ggml_type, module.out_features, module.in_features, bias, preferred))
        elif type(module) is nn.Embedding:  # not Gemma's scaled subclass: its forward does more
            setattr(parent, child, GgufEmbedding(raw, t.ggml_type, module.num_embeddings, module.embedding_dim, dtype))
        else:
            continue
        done.append(f"{name}.weight")
    for key in done:
        values.pop(key, None)


def _packed_experts(module: nn.Module, name: str, values: Mapping[str, Parts]) -> GgufExperts | None:
    """Transformers' stacked experts (``gate_up_proj``, ``down_proj``) kept packed, when every part is quantized."""
    gate_up, down = values.get(f"{name}.gate_up_proj"), values.get(f"{name}.down_proj")
    if gate_up is None or down is None or not all(_keeps(t.ggml_type) for _, t in (*gate_up, *down)):
        return None
    act = getattr(module, "act_fn", None)
    if not callable(act):
        return None
    pieces = [(as_uint8(t.data), t.ggml_type, t.torch_shape) for _, t in (*gate_up, *down)]
    return GgufExperts(pieces[:-1], pieces[-1], act)


def _set_dense(model: nn.Module, spec: ArchSpec, values: Mapping[str, Parts], cfg: Mapping[str, object], dtype: torch.dtype) -> None:
    from accelerate.utils import set_module_tensor_to_device

    expected = {n: tuple(t.shape) for n, t in model.state_dict(keep_vars=True).items()}
    for hf, parts in values.items():
        set_module_tensor_to_device(model, hf, "cpu", value=_dense(spec, parts, expected[hf], dtype, cfg))
