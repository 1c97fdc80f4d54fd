"""Hypothesis strategies for the config types of every method beyond bitsandbytes, GPTQ, AWQ and GGUF.

Each builds only valid values (the laws' premise), so the rules of compressed-tensors' pydantic
models (strategy versus group size, block structure, dynamic modes) are respected by
construction rather than filtered.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

import quantdispatch as qd
from quantdispatch.configs.compressed_tensors import CT_FORMATS, CT_PRESETS, CT_STATUSES
from quantdispatch.configs.fp8 import ACTIVATION_SCHEMES, EXPERT_DTYPES, SCALE_FORMATS
from quantdispatch.configs.integer import HQQ_BITS, METAL_BITS, QUANTO_ACTIVATIONS, QUANTO_WEIGHTS
from quantdispatch.configs.mlx import MLX_BITS, MLX_GROUPS, MLX_MODES
from quantdispatch.jsonvalue import EMPTY_OBJECT, JsonObject, freeze

__all__ = ["METHOD_STRATEGIES", "ct_args"]


def _obj(d: dict[str, Any]) -> JsonObject:
    frozen = freeze(d)
    assert isinstance(frozen, JsonObject)
    return frozen





_names = st.text(st.characters(categories=("L", "N"), include_characters="._"), min_size=1, max_size=12)
_modules = st.none() | st.lists(_names, max_size=3).map(tuple)
_small_json = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=6)
_objects = st.dictionaries(st.text(min_size=1, max_size=6), _small_json, max_size=3).map(_obj)
_opt_text = st.none() | st.text(max_size=8)


@st.composite
def ct_args(draw: st.DrawFn, activation: bool = False) -> qd.CtArgs:
    """Valid compressed-tensors quantization arguments (activation ones when asked)."""
    kind = draw(st.sampled_from(["int", "float"]))
    bits = draw(st.sampled_from([4, 6, 8]) if kind == "float" else st.integers(1, 32))
    strategies = ["tensor", "group", "token", "tensor_group", None] if activation else [
        "tensor", "channel", "group", "block", "token", "tensor_group", None]
    strategy = draw(st.sampled_from(strategies))
    group_size: int | None = None
    block = None
    if strategy in ("group", "tensor_group"):
        group_size = draw(st.sampled_from([16, 32, 64, 128]))
    elif strategy == "channel":
        group_size = draw(st.sampled_from([None, -1]))
    elif strategy == "block":
        block = draw(st.sampled_from([(128, 128), (64, 32)]))
    elif strategy is None:
        group_size = draw(st.sampled_from([None, 32, 128] if activation else [None, -1, 32, 128]))
    effective = strategy or ("tensor" if group_size is None else "channel" if group_size == -1 else "group")
    modes: list[bool | str] = [False]
    if effective == "token":
        modes = [True]
    elif effective in ("tensor", "group", "tensor_group"):
        modes = [False, True, "local"] if effective == "tensor_group" else [False, True]
    dynamic = draw(st.sampled_from(modes))
    actorder = None if activation else draw(st.sampled_from([None, "weight", "static"]))
    return qd.CtArgs(num_bits=bits, type=kind, symmetric=draw(st.booleans()), group_size=group_size, strategy=strategy,  # type: ignore[arg-type]
                     block_structure=block, dynamic=dynamic, actorder=actorder,  # type: ignore[arg-type]
                     observer=draw(st.none() | st.sampled_from(["minmax", "mse", "memoryless_minmax"])),
                     observer_kwargs=draw(st.just(EMPTY_OBJECT) | _objects),
                     scale_dtype=draw(st.none() | st.sampled_from(["torch.uint8", "torch.bfloat16"])),
                     zp_dtype=draw(st.none() | st.just("torch.int8")))


_targets = st.lists(st.sampled_from(["Linear", "Embedding", "re:.*mlp.*", "lm_head"]), min_size=1, max_size=3).map(tuple)
_scheme = st.builds(qd.CtScheme, targets=_targets, weights=st.none() | ct_args(), input_activations=st.none() | ct_args(True),
                    output_activations=st.none() | ct_args(True),
                    format=st.none() | st.sampled_from([f for f in CT_FORMATS if f != "mixed-precision"]))
_preset = st.builds(qd.CtPreset, targets=_targets)


@st.composite
def _groups(draw: st.DrawFn) -> tuple[tuple[str, Any], ...]:
    n = draw(st.integers(1, 3))
    out: list[tuple[str, Any]] = []
    presets = list(CT_PRESETS)
    for i in range(n):
        if draw(st.booleans()):
            out.append((f"group_{i}", draw(_scheme)))
        else:
            name = draw(st.sampled_from(presets))
            presets.remove(name)
            out.append((name, draw(_preset)))
    return tuple(out)


_sparsity = st.builds(qd.CtSparsity, format=st.sampled_from(["dense", "sparse-24-bitmask", "sparse-bitmask"]),
                      targets=st.none() | _targets, ignore=_modules, global_sparsity=st.none() | st.floats(0.0, 1.0),
                      sparsity_structure=st.none() | st.sampled_from(["2:4", "unstructured"]),
                      extras=st.just(EMPTY_OBJECT) | st.just(_obj({"registry_requires_subclass": False})))


@st.composite
def _compressed_tensors(draw: st.DrawFn) -> qd.CompressedTensors:
    groups = draw(st.none() | _groups())
    return qd.CompressedTensors(
        config_groups=groups, format=draw(st.sampled_from([*CT_FORMATS, "fakequant"])),
        quantization_status=draw(st.sampled_from(CT_STATUSES)),
        kv_cache_scheme=draw(st.none() | ct_args(True)) if groups else None,
        global_compression_ratio=draw(st.none() | st.floats(0.0, 10.0)),
        ignore=draw(st.none() | st.lists(st.sampled_from(["lm_head", "re:.*self_attn.*", "re:.*mlp\\.(gate|up)_proj$"]), max_size=3).map(tuple)),
        sparsity_config=draw(st.none() | _sparsity), dequantize=draw(st.booleans()),
        use_optimized_inference=draw(st.booleans()), run_compressed=draw(st.none() | st.booleans()))


def _fp8(cls: type[qd.AbstractFineGrainedFp8]) -> st.SearchStrategy[Any]:
    return st.builds(cls, activation_scheme=st.sampled_from(ACTIVATION_SCHEMES),
                     weight_block_size=st.none() | st.tuples(st.integers(1, 256), st.integers(1, 256)),
                     modules_to_not_convert=_modules, modules_to_convert=_modules, scale_fmt=st.sampled_from(SCALE_FORMATS),
                     expert_dtype=st.sampled_from(EXPERT_DTYPES), dequantize=st.booleans())


@st.composite
def _fp_quant(draw: st.DrawFn) -> qd.FpQuant:
    forward = draw(st.sampled_from(["nvfp4", "mxfp4"]))
    if forward == "mxfp4":
        method, hgs, backward = draw(st.sampled_from(["abs_max", "quest"])), draw(st.sampled_from([None, 32, 64, 128])), draw(
            st.sampled_from(["bf16", "mxfp8", "mxfp4"]))
    else:
        method, hgs, backward = "abs_max", draw(st.sampled_from([None, 16, 32, 64, 128])), "bf16"
    return qd.FpQuant(forward_dtype=forward, forward_method=method, backward_dtype=backward, hadamard_group_size=hgs,  # type: ignore[arg-type]
                      store_master_weights=draw(st.booleans()), pseudoquantization=draw(st.booleans()),
                      transform_init=draw(st.sampled_from(["hadamard", "identity", "gsr"])), modules_to_not_convert=draw(_modules))


_hqq_params = st.builds(lambda n, g, a: {"weight_quant_params": {"nbits": n, "group_size": g, "axis": a, "view_as_float": False}},
                        st.sampled_from(HQQ_BITS), st.none() | st.sampled_from([32, 64, 128]), st.sampled_from([0, 1]))
_hqq = st.builds(qd.Hqq, quant_config=st.none() | _hqq_params.map(_obj)
                 | st.dictionaries(st.sampled_from(["self_attn.q_proj", "mlp.down_proj"]), _hqq_params, min_size=1).map(_obj),
                 skip_modules=st.lists(_names, max_size=3).map(tuple))


@st.composite
def _higgs(draw: st.DrawFn) -> qd.Higgs:
    group = draw(st.sampled_from([64, 128, 256]))
    return qd.Higgs(bits=draw(st.sampled_from([2, 3, 4])), p=draw(st.sampled_from([1, 2])), group_size=group,  # type: ignore[arg-type]
                    hadamard_size=group * draw(st.integers(1, 8)), tune_metadata=draw(st.just(EMPTY_OBJECT) | _objects),
                    modules_to_not_convert=draw(_modules))


_vptq_layer = st.fixed_dictionaries({}, optional={"enable_norm": st.booleans(), "group_num": st.integers(1, 4),
                                                  "is_indice_packed": st.just(True), "vector_lens": st.just([-1, 8])})
_modelopt_common: dict[str, st.SearchStrategy[Any]] = {
    "kv_cache_quant_algo": st.none() | st.sampled_from(["FP8", "NVFP4"]), "group_size": st.none() | st.sampled_from([16, 32]),
    "exclude_modules": _modules}
_mlx_override = st.just(False) | st.builds(lambda b, g, m: {"bits": b, "group_size": g, "mode": m},
                                           st.sampled_from(MLX_BITS), st.sampled_from(MLX_GROUPS), st.sampled_from(MLX_MODES))

METHOD_STRATEGIES: dict[type[qd.AbstractQuantConfig], st.SearchStrategy[Any]] = {
    qd.Fp8: _fp8(qd.Fp8), qd.Mxfp8: _fp8(qd.Mxfp8),
    qd.FbgemmFp8: st.builds(qd.FbgemmFp8, activation_scale_ub=st.floats(0.0, 1e4), modules_to_not_convert=_modules),
    qd.Mxfp4: st.builds(qd.Mxfp4, modules_to_not_convert=_modules, dequantize=st.booleans()),
    qd.Nvfp4: st.builds(qd.Nvfp4, modules_to_not_convert=_modules),
    qd.FourOverSix: st.builds(qd.FourOverSix, activation_dtype=_opt_text, dtype=st.sampled_from(["nvfp4", "mxfp4"]),
                              keep_master_weights=st.booleans(), output_dtype=st.none() | st.just("bfloat16"),
                              scale_rule=st.sampled_from(["mse", "abs_max"]), weight_scale_2d=st.booleans(),
                              module_config_overrides=st.none() | _objects, modules_to_not_convert=_modules),
    qd.FpQuant: _fp_quant(),
    qd.CompressedTensors: _compressed_tensors(),
    qd.ModeloptFp8: st.builds(qd.ModeloptFp8, **_modelopt_common),
    qd.ModeloptNvfp4: st.builds(qd.ModeloptNvfp4, **_modelopt_common),
    qd.ModeloptMixed: st.builds(qd.ModeloptMixed, **_modelopt_common, quantized_layers=st.lists(
        st.tuples(_names, st.builds(qd.ModeloptLayer, st.sampled_from(["FP8", "NVFP4", "W4A16_NVFP4"]), st.none() | st.just(16))),
        max_size=3, unique_by=lambda t: t[0]).map(tuple)),
    qd.Mlx: st.builds(qd.Mlx, bits=st.sampled_from(MLX_BITS), group_size=st.sampled_from(MLX_GROUPS), mode=st.sampled_from(MLX_MODES),
                      extras=st.dictionaries(_names.map(lambda n: "model." + n), _mlx_override, max_size=2).map(_obj)),
    qd.Hqq: _hqq,
    qd.Quanto: st.builds(qd.Quanto, weights=st.sampled_from(QUANTO_WEIGHTS), activations=st.none() | st.sampled_from(QUANTO_ACTIVATIONS),
                         modules_to_not_convert=_modules),
    qd.Eetq: st.builds(qd.Eetq, modules_to_not_convert=_modules),
    qd.Sinq: st.builds(qd.Sinq, nbits=st.integers(1, 8), group_size=st.sampled_from([16, 64, 128]), tiling_mode=st.sampled_from(["1D", "2D"]),
                       sinq_method=st.sampled_from(["sinq", "asinq"]), modules_to_not_convert=_modules),
    qd.Metal: st.builds(qd.Metal, bits=st.sampled_from(METAL_BITS), group_size=st.integers(1, 256), modules_to_not_convert=_modules,
                        dequantize=st.booleans()),
    qd.Gemma: st.builds(qd.Gemma, num_bits=st.sampled_from([2, 4, 8]), quantize_embeddings=st.booleans(),
                        module_quant_configs=st.none() | _objects, modules_to_not_convert=_modules),
    qd.BitNet: st.builds(qd.BitNet, linear_class=st.sampled_from(["bitlinear", "autobitlinear"]),
                         quantization_mode=st.sampled_from(["online", "offline"]), use_rms_norm=st.booleans(),
                         rms_norm_eps=st.none() | st.floats(1e-9, 1e-3), modules_to_not_convert=_modules),
    **{cls: st.builds(cls, bits=bits, group_size=st.sampled_from([-1, 32, 128]), sym=st.booleans(),
                      packing_format=st.sampled_from(formats), backend=st.sampled_from(["auto", "marlin", "torch"]))
       for cls, formats, bits in (
           (qd.AutoRoundGptq, ["auto_round:gptq", "auto_round:auto_gptq", "auto_round:gptqmodel"], st.integers(2, 8)),
           (qd.AutoRoundAwq, ["auto_round:auto_awq", "auto_round:awq"], st.just(4)),  # AutoRound's AWQ packer: 4 bits only
           (qd.AutoRound, ["auto_round"], st.integers(2, 8)))},
    qd.Aqlm: st.builds(qd.Aqlm, in_group_size=st.sampled_from([8, 16]), out_group_size=st.sampled_from([1, 2]),
                       num_codebooks=st.integers(1, 4), nbits_per_codebook=st.sampled_from([8, 16]), linear_weights_not_to_quantize=_modules),
    qd.Vptq: st.builds(qd.Vptq, config_for_layers=st.dictionaries(_names, _vptq_layer, max_size=2).map(_obj),
                       shared_layer_config=st.just(EMPTY_OBJECT) | _objects, modules_to_not_convert=_modules),
    qd.Spqr: st.builds(qd.Spqr, shapes=st.dictionaries(_names, st.integers(1, 4096), max_size=2).map(_obj), modules_to_not_convert=_modules),
    qd.Higgs: _higgs(),
    qd.Torchao: st.builds(qd.Torchao, quant_type=st.builds(
        qd.TorchaoType, name=st.sampled_from(["Int4WeightOnlyConfig", "Int8WeightOnlyConfig", "Float8DynamicActivationFloat8WeightConfig"]),
        version=st.integers(1, 2), data=st.just(EMPTY_OBJECT) | _objects), modules_to_not_convert=_modules,
        include_input_output_embeddings=st.booleans(), untie_embedding_weights=st.booleans()),
    qd.Quark: st.builds(qd.Quark, global_quant_config=st.none() | _objects, exclude=st.lists(_names, max_size=3).map(tuple),
                        kv_cache_group=st.lists(_names, max_size=2).map(tuple), quant_mode=st.none() | st.just("eager_mode"),
                        export=st.none() | _objects),
}
"""One strategy per config type of these families (extras are added by ``strategies.py``)."""
