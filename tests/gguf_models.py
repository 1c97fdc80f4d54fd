"""Tiny GGUF models for tests, written with gguf-py's writer the way llama.cpp's converter does.

A random Transformers model of one architecture; its metadata written with ``GGUFWriter``'s
``add_*``; its tensor names from gguf-py's own ``get_tensor_name_map``; llama's q/k rows permuted
and Gemma's norms stored as ``1 + w`` as ``convert_hf_to_gguf.py`` does; weights quantized with
``gguf.quants.quantize`` (K-quants with the round-to-nearest encoders of research/env.md,
Appendix A, which gguf-py's dequantizers invert).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

gguf = __import__("gguf")  # imported by callers after pytest.importorskip("gguf")
T = gguf.GGMLQuantizationType

QK_K = 256

# arch → (Transformers config class name, gguf MODEL_ARCH member)
ARCHS: dict[str, tuple[str, str]] = {
    "llama": ("LlamaConfig", "LLAMA"),
    "qwen2": ("Qwen2Config", "QWEN2"),
    "qwen3": ("Qwen3Config", "QWEN3"),
    "gemma2": ("Gemma2Config", "GEMMA2"),
    "gemma3": ("Gemma3TextConfig", "GEMMA3"),
    "phi3": ("Phi3Config", "PHI3"),
    "qwen2moe": ("Qwen2MoeConfig", "QWEN2MOE"),
}


def tiny_model(arch: str, *, hidden: int = 64, intermediate: int = 128, layers: int = 2, vocab: int = 96, heads: int = 4,
               kv_heads: int = 2, tie: bool = False, seed: int = 0, head_dim: int | None = None,
               moe: dict[str, int] | None = None) -> Any:
    """A random Transformers model of ``arch``, small, with non-trivial norms and biases."""
    import transformers

    cls = getattr(transformers, ARCHS[arch][0])
    kw: dict[str, Any] = dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers, vocab_size=vocab,
                              num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=128,
                              tie_word_embeddings=tie, pad_token_id=None, bos_token_id=1, eos_token_id=2)
    if arch in ("qwen3", "gemma2", "gemma3"):
        kw["head_dim"] = head_dim or hidden // heads
    if arch in ("gemma2", "gemma3"):
        kw["sliding_window"] = 32
    if arch == "qwen2moe":
        kw.update(num_experts=4, num_experts_per_tok=2, **(moe or {}))
    config = cls(**kw)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.1 if "norm" in name else 0.3) + (1.0 if "norm" in name and "gemma" not in arch else 0.0))
    return model.eval()


def _permute(w: NDArray[Any], n_head: int) -> NDArray[Any]:
    """llama.cpp's ``LlamaModel.permute``."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def quantize_q4_k(x: NDArray[Any]) -> NDArray[Any]:
    """Round-to-nearest Q4_K (research/env.md, Appendix A): uint8 ``(n_superblocks, 144)``."""
    x = x.astype(np.float32).reshape(-1, QK_K)
    n = x.shape[0]
    sub = x.reshape(n, 8, 32)
    mn = np.minimum(sub.min(-1), 0.0)
    scale = (sub.max(-1) - mn) / 15.0
    mins = -mn
    d = (scale.max(-1) / 63.0).astype(np.float16)
    dmin = (mins.max(-1) / 63.0).astype(np.float16)
    d32, dm32 = d.astype(np.float32), dmin.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.clip(np.rint(np.where(d32[:, None] > 0, scale / d32[:, None], 0)), 0, 63).astype(np.uint8)
        m = np.clip(np.rint(np.where(dm32[:, None] > 0, mins / dm32[:, None], 0)), 0, 63).astype(np.uint8)
        ed, em = d32[:, None] * sc, dm32[:, None] * m
        q = np.where(ed[..., None] > 0, np.rint((sub + em[..., None]) / ed[..., None]), 0)
    q = np.clip(q, 0, 15).astype(np.uint8).reshape(n, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, 128)
    s = np.zeros((n, 12), np.uint8)
    s[:, 0:4] = (sc[:, 0:4] & 0x3F) | ((sc[:, 4:8] >> 4) << 6)
    s[:, 4:8] = (m[:, 0:4] & 0x3F) | ((m[:, 4:8] >> 4) << 6)
    s[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((m[:, 4:8] & 0x0F) << 4)
    return np.concatenate([d.reshape(n, 1).view(np.uint8), dmin.reshape(n, 1).view(np.uint8), s, qs], axis=1)


def quantize_q6_k(x: NDArray[Any]) -> NDArray[Any]:
    """Round-to-nearest Q6_K (research/env.md, Appendix A): uint8 ``(n_superblocks, 210)``."""
    x = x.astype(np.float32).reshape(-1, QK_K)
    n = x.shape[0]
    sub = x.reshape(n, 16, 16)
    maxv = np.take_along_axis(sub, np.abs(sub).argmax(-1)[..., None], -1)[..., 0]
    sc = maxv / -32.0
    max_sc = np.take_along_axis(sc, np.abs(sc).argmax(-1)[..., None], -1)[..., 0]
    d = (max_sc / -128.0).astype(np.float16)
    d32 = d.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        ls = np.clip(np.rint(sc * np.where(d32 != 0, 1.0 / d32, 0.0)[:, None]), -128, 127).astype(np.int8)
        eff = d32[:, None] * ls.astype(np.float32)
        q = np.where(eff[..., None] != 0, np.rint(sub / eff[..., None]), 0)
    u = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(n, 2, 128)
    lo, hi = u & 0x0F, u >> 4
    ql = (lo[:, :, :64] | (lo[:, :, 64:] << 4)).reshape(n, 128)
    h = hi.reshape(n, 2, 4, 32)
    qh = (h[:, :, 0] | (h[:, :, 1] << 2) | (h[:, :, 2] << 4) | (h[:, :, 3] << 6)).reshape(n, 64)
    return np.concatenate([ql, qh, ls.view(np.uint8), d.reshape(n, 1).view(np.uint8)], axis=1)


def encode(data: NDArray[Any], qtype: Any) -> NDArray[Any]:
    """``data`` (rows × row length) in GGML type ``qtype``, as the bytes or values GGUFWriter takes."""
    if qtype == T.F32:
        return data.astype(np.float32)
    if qtype == T.F16:
        return data.astype(np.float16)
    if qtype in (T.Q4_K, T.Q6_K):
        enc = quantize_q4_k if qtype == T.Q4_K else quantize_q6_k
        return enc(data).reshape(data.shape[0], -1)
    return np.asarray(gguf.quants.quantize(data.astype(np.float32), qtype))


def write_gguf(model: Any, arch: str, path: Path, qtype: Any, *, name: str | None = None, tokenizer: dict[str, Any] | None = None,
               types: dict[str, Any] | None = None, skip: tuple[str, ...] = (), extra: Mapping[str, NDArray[Any]] | None = None) -> Path:
    """Write ``model`` as a GGUF file of ``arch``: 2-D weights in ``qtype`` (or ``types[gguf name]``),
    1-D ones (norms, biases) in F32."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch=arch)
    if name is not None:
        w.add_name(name)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", rope.get("full_attention", {}).get("rope_theta", 10000.0))
    w.add_rope_freq_base(float(theta))
    w.add_rope_dimension_count(head_dim)
    if arch in ("qwen3", "gemma2", "gemma3"):
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if arch in ("gemma2", "gemma3"):
        w.add_sliding_window(cfg.sliding_window)
    if arch == "qwen2moe":
        w.add_expert_count(cfg.num_experts)
        w.add_expert_used_count(cfg.num_experts_per_tok)
        w.add_expert_feed_forward_length(cfg.moe_intermediate_size)
        w.add_expert_shared_feed_forward_length(cfg.shared_expert_intermediate_size)
    if arch == "gemma2":
        w.add_attn_logit_softcapping(cfg.attn_logit_softcapping)
        w.add_final_logit_softcapping(cfg.final_logit_softcapping)
    w.add_file_type(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    for key, value in (tokenizer or {}).items():
        getattr(w, key)(value)
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, ARCHS[arch][1]), cfg.num_hidden_layers)
    tensors: list[tuple[str, Any]] = []
    for hf_name, t in model.state_dict().items():
        if hf_name.endswith(".experts.gate_up_proj"):  # Transformers stacks gate and up; llama.cpp writes them apart
            gate, up = t.chunk(2, dim=1)
            stem = hf_name.removesuffix("gate_up_proj")
            tensors += [(stem + "gate_proj.weight", gate), (stem + "up_proj.weight", up)]
        elif hf_name.endswith(".experts.down_proj"):
            tensors.append((hf_name + ".weight", t))
        elif hf_name.endswith("shared_expert_gate.weight"):
            tensors.append((hf_name, t.reshape(-1)))  # llama.cpp stores it as a vector
        else:
            tensors.append((hf_name, t))
    for hf_name, t in tensors:
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        gname = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert gname is not None, hf_name
        if gname in skip:
            continue
        data = t.detach().float().numpy()
        if arch == "llama" and ".q_proj." in hf_name:
            data = _permute(data, cfg.num_attention_heads)
        elif arch == "llama" and ".k_proj." in hf_name:
            data = _permute(data, cfg.num_key_value_heads)
        if arch.startswith("gemma") and hf_name.endswith("norm.weight"):
            data = data + 1
        kind = T.F32 if data.ndim == 1 else (types or {}).get(gname, qtype)
        encoded = encode(data.reshape(-1, data.shape[-1]), kind).reshape(*data.shape[:-1], -1) if data.ndim == 3 else encode(data, kind)
        if kind in (T.F32, T.F16):
            w.add_tensor(gname, encoded)
        else:
            w.add_tensor(gname, encoded, raw_shape=encoded.shape, raw_dtype=kind)
    for gname, data in (extra or {}).items():
        w.add_tensor(gname, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def rewrite(source: Path, dest: Path, qtype: Any, *, split_max_tensors: int = 0) -> Path:
    """Copy the GGUF file ``source`` (any version: read with quantdispatch's reader) to ``dest`` as
    GGUF v3 with gguf-py's writer, 2-D F32 weights quantized to ``qtype`` by gguf-py (rows that are
    not whole blocks stay F16, as llama-quantize falls back); split in shards of
    ``split_max_tensors`` tensors when given (``dest``'s stem gets ``-00001-of-0000N``)."""
    from quantdispatch.gguf.data import open_gguf_data
    from quantdispatch.gguf.types import GgufValueType

    with open_gguf_data(source).value as f:  # type: ignore[union-attr]
        header = f.header
        w = gguf.GGUFWriter(str(dest), arch=str(header.get("general.architecture")), split_max_tensors=split_max_tensors)
        for (key, value), (_, vtype) in zip(header.metadata, header.value_types, strict=True):
            if key == "general.architecture":
                continue
            if isinstance(value, tuple):
                w.add_key_value(key, list(value), gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType(int(vtype)))
            else:
                w.add_key_value(key, value, gguf.GGUFValueType(int(vtype)))
        block = gguf.GGML_QUANT_SIZES[qtype][0]
        for info in header.tensors:
            t = f.tensor(info.name).value  # type: ignore[union-attr]
            data = np.frombuffer(t.data, dtype=np.float32).reshape(t.torch_shape).copy()
            if data.ndim == 1 or qtype == T.F32:
                w.add_tensor(info.name, data)
            elif data.shape[-1] % block:
                w.add_tensor(info.name, data.astype(np.float16))
            else:
                q = encode(data, qtype)
                w.add_tensor(info.name, q, raw_shape=q.shape, raw_dtype=qtype)
            del t
        assert GgufValueType.ARRAY  # the reader's value types are gguf-py's ids
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return dest
