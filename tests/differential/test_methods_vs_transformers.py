"""Differential tests of the families beyond bitsandbytes, GPTQ, AWQ and GGUF against Transformers 5.24's config classes.

Every class that can be built here (no backend package needed: Transformers' FP8, FP4, codebook
and library-integer configs) is the oracle for

(a) acceptance: every config our strategies build, dumped, is accepted by
    ``AutoQuantizationConfig.from_dict``, and ``dump(config, style="transformers")`` equals its
    ``to_dict()`` after a JSON round trip, key for key and value for value;
(b) the accept/reject decision on hand-picked documents, valid and invalid, outside every known
    divergence;
(c) each deliberate divergence (``DIVERGENCES``): its witness really is accepted by Transformers
    and refused by us (we are stricter only where Transformers checks nothing, hf_anchor.md §3.4).

HQQ, compressed-tensors, torchao and Quark need their backend package to be built by
Transformers; compressed-tensors is checked against its own pydantic models in
test_vs_compressed_tensors.py.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from typing import Any, Final, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from transformers.quantizers.auto import AutoQuantizationConfig

import quantdispatch as qd

from ..properties.strategies import CONFIG_STRATEGIES

BUILDABLE: Final[tuple[type[qd.AbstractQuantConfig], ...]] = (
    qd.Fp8, qd.Mxfp8, qd.FbgemmFp8, qd.Mxfp4, qd.Nvfp4, qd.FourOverSix, qd.FpQuant, qd.Quanto, qd.Eetq, qd.Sinq, qd.Metal,
    qd.Gemma, qd.BitNet, qd.AutoRound, qd.AutoRoundGptq, qd.AutoRoundAwq, qd.Aqlm, qd.Vptq, qd.Spqr, qd.Higgs,
)


def theirs(doc: dict[str, Any]) -> dict[str, Any] | Exception:
    """Transformers' reading of a document: its ``to_dict()`` through JSON, or the exception."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = AutoQuantizationConfig.from_dict(copy.deepcopy(doc))
        result: dict[str, Any] = json.loads(json.dumps(cfg.to_dict(), default=str))
        return result
    except Exception as e:
        return e


def first_difference(ours: dict[str, Any], other: dict[str, Any]) -> str | None:
    """The first key whose value differs (for failure messages)."""
    for key in sorted(set(ours) | set(other)):
        a, b = ours.get(key, "<absent>"), other.get(key, "<absent>")
        if a != b or type(a) is not type(b):
            return f"{key}: ours {a!r}, Transformers {b!r}"
    return None


@pytest.mark.parametrize("cls", BUILDABLE, ids=lambda c: c.__name__)
@settings(max_examples=15)
@given(data=st.data())
def test_generated_configs_agree(cls: type[qd.AbstractQuantConfig], data: st.DataObject) -> None:
    """(a) Transformers accepts what we write and writes what ``dump(style="transformers")`` says."""
    config = data.draw(CONFIG_STRATEGIES[cls])
    doc = qd.dump(config)
    other = theirs(doc)
    assert not isinstance(other, Exception), f"Transformers refuses {doc!r}: {other!r}"
    problem = first_difference(qd.dump(config, style="transformers"), other)
    assert problem is None, f"{problem}\n  input: {doc!r}"


AGREE: Final[tuple[tuple[dict[str, Any], bool], ...]] = (
    ({"quant_method": "fp8"}, True),
    ({"quant_method": "fp8", "activation_scheme": "Static", "weight_block_size": None}, True),
    ({"quant_method": "fp8", "activation_scheme": "tensorwise"}, False),
    ({"quant_method": "fp8", "weight_block_size": [128, 0]}, False),
    ({"quant_method": "fp8", "weight_block_size": [128, 128, 1]}, False),
    ({"quant_method": "mxfp8", "scale_fmt": "e8m0"}, False),
    ({"quant_method": "fp8", "expert_dtype": "fp6"}, False),
    ({"quant_method": "mxfp4", "modules_to_not_convert": ["lm_head"], "dequantize": True}, True),
    ({"quant_method": "fp_quant", "forward_dtype": "mxfp8"}, False),
    ({"quant_method": "fp_quant", "forward_dtype": "mxfp4", "forward_method": "quest", "hadamard_group_size": 64}, True),
    ({"quant_method": "fp_quant", "forward_dtype": "mxfp4", "hadamard_group_size": 16}, False),
    ({"quant_method": "fp_quant", "forward_dtype": "nvfp4", "forward_method": "quest"}, False),
    ({"quant_method": "fp_quant", "backward_dtype": "mxfp8"}, False),
    ({"quant_method": "fp_quant", "transform_init": "random"}, False),
    ({"quant_method": "quanto", "weights": "int4", "activations": "float8"}, True),
    ({"quant_method": "quanto", "weights": "int3"}, False),
    ({"quant_method": "quanto", "activations": "int4"}, False),
    ({"quant_method": "eetq", "weights": "int4"}, False),
    ({"quant_method": "sinq", "method": "ASINQ"}, True),
    ({"quant_method": "sinq", "method": "gptq"}, False),
    ({"quant_method": "metal", "bits": 3}, False),
    ({"quant_method": "metal", "group_size": 0}, False),
    ({"quant_method": "bitnet", "linear_class": "dense"}, False),
    ({"quant_method": "bitnet", "quantization_mode": "dynamic"}, False),
    ({"quant_method": "auto-round", "bits": 1}, False),
    ({"quant_method": "auto-round", "group_size": 0}, False),
    ({"quant_method": "auto-round", "bits": 6, "group_size": -1, "data_type": "int", "act_bits": 16}, True),
    ({"quant_method": "aqlm", "num_codebooks": "2"}, False),
    ({"quant_method": "vptq", "enable_proxy_error": True}, False),
    ({"quant_method": "vptq", "config_for_layers": {"model.layers.0.mlp": {"is_indice_packed": False}}}, False),
    ({"quant_method": "vptq", "config_for_layers": {"model.layers.0.mlp": {"group_num": 2}}}, True),
    ({"quant_method": "spqr", "bits": 4}, False),
    ({"quant_method": "spqr", "beta1": 8}, False),
    ({"quant_method": "spqr", "shapes": []}, False),
    ({"quant_method": "higgs", "bits": 8}, False),
    ({"quant_method": "higgs", "p": 3}, False),
    ({"quant_method": "higgs", "group_size": 32}, False),
    ({"quant_method": "higgs", "hadamard_size": 640, "group_size": 256}, False),
    ({"quant_method": "higgs", "hadamard_size": 1024, "group_size": 128, "bits": 2}, True),
)


@pytest.mark.parametrize(("doc", "accepted"), AGREE, ids=[json.dumps(d)[:60] for d, _ in AGREE])
def test_same_decision(doc: dict[str, Any], accepted: bool) -> None:
    """(b) Both libraries accept, or both refuse, these documents (and the listed answer is theirs)."""
    assert not any(row.witness == doc for row in DIVERGENCES)
    other = theirs(doc)
    parsed = qd.parse(doc)
    ours_ok = isinstance(parsed, qd.Ok) and isinstance(qd.validate(parsed.value), qd.Ok)
    assert (not isinstance(other, Exception)) == accepted, other
    assert ours_ok == accepted, parsed
    if accepted:
        assert isinstance(parsed, qd.Ok) and not isinstance(other, Exception)
        problem = first_difference(qd.dump(parsed.value, style="transformers"), other)
        assert problem is None, problem


class Divergence(NamedTuple):
    """A place where we refuse what Transformers accepts, on purpose; its witness shows it."""

    name: str
    witness: dict[str, Any]
    reason: str


DIVERGENCES: Final[tuple[Divergence, ...]] = (
    Divergence("fp8-modelopt-quant-algo", {"quant_method": "fp8", "quant_algo": "MIXED_PRECISION"},
               "a ModelOpt checkpoint mislabelled fp8 (DeepSeek-V4-Flash-NVFP4): Transformers drops quant_algo and misreads the weights"),
    Divergence("fp8-skip-list-conflict", {"quant_method": "fp8", "modules_to_not_convert": ["a"], "ignored_layers": ["b"]},
               "two skip lists that disagree: Transformers silently keeps modules_to_not_convert"),
    Divergence("fp8-float-block", {"quant_method": "fp8", "weight_block_size": [128.5, 128]},
               "a block size is a whole number of elements; Transformers only checks > 0"),
    Divergence("fbgemm-negative-bound", {"quant_method": "fbgemm_fp8", "activation_scale_ub": -1.0},
               "an upper bound of activation scales must be ≥ 0; Transformers checks nothing"),
    Divergence("mxfp4-skip-list-type", {"quant_method": "mxfp4", "modules_to_not_convert": "lm_head"},
               "a string is not a list of modules (it would be iterated character by character)"),
    Divergence("nvfp4-skip-list-type", {"quant_method": "nvfp4", "modules_to_not_convert": 3}, "the same, for NVFP4"),
    Divergence("fouroversix-dtype-type", {"quant_method": "fouroversix", "dtype": 4}, "FourOverSixConfig validates nothing"),
    Divergence("sinq-string-bits", {"quant_method": "sinq", "nbits": "4"}, "SinqConfig coerces int('4'); a JSON number is required"),
    Divergence("sinq-tiling", {"quant_method": "sinq", "tiling_mode": "3D"}, "SINQ tiles 1D or 2D; Transformers takes any string"),
    Divergence("metal-float-group", {"quant_method": "metal", "group_size": 64.5}, "MetalConfig only checks > 0"),
    Divergence("gemma-bits", {"quant_method": "gemma", "num_bits": 0}, "GemmaQuantizationConfig validates nothing"),
    Divergence("bitnet-eps", {"quant_method": "bitnet", "rms_norm_eps": -1.0}, "an epsilon must be ≥ 0"),
    Divergence("aqlm-zero-group", {"quant_method": "aqlm", "in_group_size": 0}, "AqlmConfig checks the type only"),
    Divergence("aqlm-code-width", {"quant_method": "aqlm", "nbits_per_codebook": 64}, "AQLM codes are at most 16 bits wide"),
    Divergence("vptq-layer-key", {"quant_method": "vptq", "config_for_layers": {"l": {"num_bits": 2}}},
               "VptqLayerConfig swallows unknown keys (**kwargs); a misspelt key changes nothing silently"),
    Divergence("higgs-metadata-type", {"quant_method": "higgs", "tune_metadata": []}, "tune_metadata is an object of per-layer data"),
)


@pytest.mark.parametrize("row", DIVERGENCES, ids=lambda r: r.name)
def test_divergence_is_real(row: Divergence) -> None:
    """(c) Each divergence's witness is accepted by Transformers and refused by us."""
    other = theirs(row.witness)
    assert not isinstance(other, Exception), f"Transformers refuses it too ({other!r}): the row is not a divergence"
    parsed = qd.parse(row.witness)
    refused = isinstance(parsed, qd.Err) or isinstance(qd.validate(parsed.value), qd.Err)
    assert refused, parsed


@pytest.mark.parametrize("path", sorted((p for p in __import__("pathlib").Path(__file__).resolve().parents[3].glob(
    "shared/realworld/configs/*/*.json") if p.parent.name in ("fp8", "mxfp4")), key=str) or ["none"], ids=str)
def test_real_fp8_and_mxfp4_configs_agree(path: Any) -> None:
    """(d) The real fp8 and mxfp4 configs: Transformers writes what we say it writes."""
    if path == "none":
        pytest.skip("no corpus")
    doc = json.loads(path.read_text(encoding="utf-8"))
    parsed = qd.parse(doc)
    assert isinstance(parsed, qd.Ok)
    other = theirs(doc)
    assert not isinstance(other, Exception)
    assert first_difference(qd.dump(parsed.value, style="transformers"), other) is None
