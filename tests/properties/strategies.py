"""Hypothesis strategies for every built-in config type, JSON values and environments."""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import strategies as st

import quantdispatch as qd
from quantdispatch.codec.registry import spec_for
from quantdispatch.configs.bnb import BNB_QUANT_STORAGE
from quantdispatch.dtypes import DType
from quantdispatch.gguf.types import block_size
from quantdispatch.jsonvalue import Json, JsonObject, freeze

from .strategies_families import METHOD_STRATEGIES

__all__ = ["json_values", "json_objects", "configs", "CONFIG_STRATEGIES", "environments", "devices"]

_scalars: st.SearchStrategy[Json] = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(
    allow_nan=False, allow_infinity=False
) | st.text(max_size=12)
json_values: st.SearchStrategy[Json] = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
json_objects: st.SearchStrategy[dict[str, Json]] = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


def _extras(cls: type[qd.AbstractQuantConfig]) -> st.SearchStrategy[JsonObject]:
    spec = spec_for(cls)
    assert spec is not None
    taken = set(spec.tag_keys) | {k for f in spec.fields for k in f.keys}
    keys = st.text(min_size=1, max_size=10).map(lambda s: "x_" + s).filter(lambda k: k not in taken)

    def build(d: dict[str, Json]) -> JsonObject:
        frozen = freeze(d)
        assert isinstance(frozen, JsonObject)
        return frozen

    return st.dictionaries(keys, json_values, max_size=3).map(build)


_names = st.text(st.characters(categories=("L", "N"), include_characters="._"), min_size=1, max_size=12)
_modules = st.none() | st.lists(_names, max_size=3).map(tuple)
_floats_dtypes = st.sampled_from([DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16])
_group = st.sampled_from([-1, 32, 64, 128]) | st.integers(1, 4096)
_meta = st.none() | st.dictionaries(st.sampled_from(["quantizer", "uri", "damp_auto_increment"]), json_values, max_size=2).map(
    lambda d: JsonObject(tuple((k, freeze(v)) for k, v in d.items()))
)


def _bnb4() -> st.SearchStrategy[qd.Bnb4Bit]:
    return st.builds(qd.Bnb4Bit, quant_type=st.sampled_from(["fp4", "nf4"]), compute_dtype=_floats_dtypes,
                     use_double_quant=st.booleans(), quant_storage=st.sampled_from(BNB_QUANT_STORAGE),
                     skip_modules=_modules, enable_fp32_cpu_offload=st.booleans(), extras=_extras(qd.Bnb4Bit))


def _bnb8() -> st.SearchStrategy[qd.Bnb8Bit]:
    return st.builds(qd.Bnb8Bit, threshold=st.floats(0.0, 100.0), has_fp16_weight=st.booleans(), skip_modules=_modules,
                     enable_fp32_cpu_offload=st.booleans(), extras=_extras(qd.Bnb8Bit))


def _gptq(cls: type[qd.AbstractGptq]) -> st.SearchStrategy[qd.AbstractGptq]:
    return st.builds(cls, bits=st.sampled_from([2, 3, 4, 8]), group_size=_group, desc_act=st.booleans(), sym=st.booleans(),
                     true_sequential=st.booleans(), damp_percent=st.floats(0.001, 0.999), static_groups=st.booleans(),
                     act_group_aware=st.booleans(),
                     modules_in_block_to_quantize=st.none() | st.lists(st.lists(_names, max_size=3).map(tuple), max_size=3).map(tuple),
                     lm_head=st.booleans(), meta=_meta, extras=_extras(cls),
                     backend=st.none() | st.sampled_from(["auto", "marlin", "exllama_v2", "torch"]),
                     max_input_length=st.none() | st.integers(1, 1 << 16), use_exllama=st.none() | st.booleans(),
                     disable_exllama=st.none() | st.booleans(), use_cuda_fp16=st.none() | st.booleans(),
                     exllama_config=st.none() | st.sampled_from([freeze({"version": 1}), freeze({"version": 2})]))


def _awq(cls: type[qd.AbstractAwq]) -> st.SearchStrategy[qd.AbstractAwq]:
    return st.builds(cls, group_size=st.sampled_from([32, 64, 128]) | st.integers(1, 1024), zero_point=st.booleans(),
                     modules_to_not_convert=_modules, extras=_extras(cls),
                     backend=st.none() | st.sampled_from(["auto", "autoawq", "ExLlamaV2"]),
                     max_input_length=st.none() | st.integers(1, 1 << 16), do_fuse=st.none() | st.booleans(),
                     fuse_max_seq_len=st.none() | st.integers(1, 4096))


def _tensor(name: str) -> st.SearchStrategy[qd.GgufTensor]:
    """A tensor whose row length is a whole number of its type's blocks, as valid files have."""
    return st.sampled_from(list(qd.GgmlType)).flatmap(lambda t: st.builds(
        qd.GgufTensor, name=st.just(name), ggml_type=st.just(t),
        shape=st.integers(0, 8).map(lambda k: k * block_size(t)).flatmap(
            lambda row: st.just((row,)) | st.integers(1, 64).map(lambda rows: (row, rows)))))


def _gguf() -> st.SearchStrategy[qd.Gguf]:
    return st.builds(qd.Gguf, architecture=st.none() | _names, file_type=st.none() | st.sampled_from(list(qd.LlamaFileType)),
                     tensors=st.lists(_names, max_size=4, unique=True).flatmap(
                         lambda names: st.tuples(*[_tensor(n) for n in names])), quantization_version=st.none() | st.integers(0, 9),
                     gguf_file=st.none() | _names, dequantize=st.booleans(), extras=_extras(qd.Gguf))


def _and_extras(cls: type[qd.AbstractQuantConfig], strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Add extras to the configs of a strategy that draws none of its own."""
    return st.tuples(strategy, _extras(cls)).map(lambda t: t[0] if t[0].extras.items else attrs.evolve(t[0], extras=t[1]))


CONFIG_STRATEGIES: dict[type[qd.AbstractQuantConfig], st.SearchStrategy[Any]] = {
    qd.Bnb4Bit: _bnb4(), qd.Bnb8Bit: _bnb8(), qd.Gptq: _gptq(qd.Gptq), qd.GptqV2: _gptq(qd.GptqV2),
    qd.AwqGemm: _awq(qd.AwqGemm), qd.AwqGemv: _awq(qd.AwqGemv), qd.AwqGemvFast: _awq(qd.AwqGemvFast),
    qd.AwqMarlin: _awq(qd.AwqMarlin), qd.AwqLlm: _awq(qd.AwqLlm), qd.Gguf: _gguf(),
    # MLX's extras are its per-module overrides: its strategy draws them.
    **{cls: s if cls is qd.Mlx else _and_extras(cls, s) for cls, s in METHOD_STRATEGIES.items()},
}
"""One strategy per built-in config type; the laws are applied to each."""

configs: st.SearchStrategy[qd.AbstractQuantConfig] = st.one_of(*CONFIG_STRATEGIES.values())

devices: st.SearchStrategy[qd.AbstractDevice] = st.sampled_from([qd.Cpu(), qd.Mps()]) | st.builds(
    qd.Cuda, index=st.integers(0, 3), capability=st.sampled_from([(6, 1), (7, 0), (7, 5), (8, 0), (8, 9), (9, 0)]))

_packages = st.lists(
    st.sampled_from(["torch", "bitsandbytes", "gptqmodel", "optimum", "gguf"]).flatmap(
        lambda n: st.sampled_from(["0.1", "1.4.3", "2.13.0+cpu", "7.6.0", "0.50.2", "garbage"]).map(
            lambda v: qd.Package(n, qd.Version.parse(v)))),
    max_size=5, unique_by=lambda p: p.name,
).map(tuple)
environments: st.SearchStrategy[qd.Environment] = st.builds(
    qd.Environment, packages=_packages, devices=st.lists(devices, max_size=3).map(lambda ds: (qd.Cpu(), *ds)))
