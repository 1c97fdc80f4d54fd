"""Differential tests of our compressed-tensors codec against compressed-tensors' own pydantic
models (``QuantizationConfig``, ``QuantizationScheme``, ``QuantizationArgs``; 0.20.1, the dev extra).

(a) Every config our strategy builds, dumped, is accepted by ``QuantizationConfig.model_validate``
    and read to the same values (targets, bits, type, symmetry, group size, the strategy it
    infers, block structure, dynamic mode, activation order, the KV-cache scheme, ignore list,
    status and format).
(b) Hand-picked documents, valid and invalid, get the same accept/reject decision.
(c) Each deliberate divergence (we refuse what compressed-tensors accepts) is real.
(d) ``dump(config, style="transformers")`` equals Transformers' ``CompressedTensorsConfig.to_dict()``
    (buildable here because compressed-tensors is installed), on generated and real configs;
    preset groups aside (compressed-tensors expands them from its own table).
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Final, NamedTuple

import pytest
from hypothesis import given, settings

pytest.importorskip("torch")
ct = pytest.importorskip("compressed_tensors.quantization")

import quantdispatch as qd

from ..properties.strategies import CONFIG_STRATEGIES


def theirs(doc: dict[str, Any]) -> Any:
    """compressed-tensors' reading of a document as Transformers hands it over (its own defaults
    for ``format``, ``dense``, and status filled in: the pydantic model's ``fakequant`` never
    applies on that route), or the exception it raised."""
    given = {"format": "dense", "quantization_status": "initialized", **{k: v for k, v in doc.items() if k != "sparsity_config"}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ct.QuantizationConfig.model_validate(given)
    except Exception as e:
        return e


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def args_difference(ours: qd.CtArgs | None, other: Any, where: str) -> str | None:
    """The first field in which our arguments and theirs differ."""
    if ours is None or other is None:
        return None if ours is None and other is None else f"{where}: ours {ours!r}, theirs {other!r}"
    actorder = {"static": "weight"}.get(ours.actorder or "", ours.actorder)
    pairs = {
        "num_bits": (ours.num_bits, other.num_bits), "type": (ours.type, _value(other.type)),
        "symmetric": (ours.symmetric, other.symmetric), "group_size": (ours.group_size, other.group_size),
        "strategy": (ours.effective_strategy, _value(other.strategy)),
        "block_structure": (list(ours.block_structure) if ours.block_structure else None, other.block_structure),
        "dynamic": (ours.dynamic, _value(other.dynamic)), "actorder": (actorder, {"static": "weight"}.get(_value(other.actorder), _value(
            other.actorder))),
    }
    for name, (a, b) in pairs.items():
        if a != b:
            return f"{where}.{name}: ours {a!r}, theirs {b!r}"
    return None


def config_difference(ours: qd.CompressedTensors, other: Any) -> str | None:
    """The first value in which our config and theirs differ."""
    for (name, group), (their_name, scheme) in zip(ours.config_groups or (), other.config_groups.items(), strict=True):
        if name != their_name or list(group.targets) != scheme.targets:
            return f"group {name}: targets {group.targets} vs {their_name} {scheme.targets}"
        if isinstance(group, qd.CtScheme):
            for key in ("weights", "input_activations", "output_activations"):
                problem = args_difference(getattr(group, key), getattr(scheme, key), f"{name}.{key}")
                if problem:
                    return problem
    top = {"format": (ours.format, other.format), "status": (ours.quantization_status, _value(other.quantization_status)),
           "ignore": (list(ours.ignore or ()), other.ignore or []),  # absent: [] there, None here; both ignore nothing
           "ratio": (ours.global_compression_ratio, other.global_compression_ratio)}
    for name, (a, b) in top.items():
        if a != b:
            return f"{name}: ours {a!r}, theirs {b!r}"
    return args_difference(ours.kv_cache_scheme, other.kv_cache_scheme, "kv_cache_scheme")


@settings(max_examples=40)
@given(config=CONFIG_STRATEGIES[qd.CompressedTensors])
def test_generated_configs_agree(config: qd.CompressedTensors) -> None:
    """(a) compressed-tensors accepts what we write and reads the values we read."""
    if not config.config_groups:
        return  # nothing for QuantizationConfig to read (Transformers does not build it either)
    doc = qd.dump(config)
    other = theirs(doc)
    assert not isinstance(other, Exception), f"compressed-tensors refuses {json.dumps(doc)}: {other}"
    problem = config_difference(config, other)
    assert problem is None, f"{problem}\n  input: {json.dumps(doc)}"


def _doc(weights: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    scheme: dict[str, Any] = {"targets": ["Linear"], **({"weights": weights} if weights is not None else {}), **more.pop("scheme", {})}
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"group_0": scheme}, **more}


AGREE: Final[tuple[tuple[dict[str, Any], bool], ...]] = (
    (_doc({"num_bits": 4, "group_size": 128}), True),
    (_doc({"num_bits": 8, "type": "FLOAT", "strategy": "TENSOR"}), True),
    (_doc({"num_bits": 8, "type": "float", "strategy": "block", "block_structure": "128x128"}), True),
    (_doc({"num_bits": 4, "strategy": "group"}), False),
    (_doc({"num_bits": 4, "strategy": "channel", "group_size": 128}), False),
    (_doc({"num_bits": 8, "strategy": "token"}), False),
    (_doc({"num_bits": 8, "strategy": "token", "dynamic": True}), True),
    (_doc({"num_bits": 8, "block_structure": [128, 128]}), False),
    (_doc({"num_bits": 8, "strategy": "block"}), False),
    (_doc({"num_bits": 8, "strategy": "channel", "dynamic": True}), False),
    (_doc({"num_bits": 4, "strategy": "group", "group_size": 16, "dynamic": "local"}), False),
    (_doc({"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16, "dynamic": "local"}), True),
    (_doc({"num_bits": 4, "group_size": 128, "actorder": "group"}), False),
    (_doc({"num_bits": 4, "group_size": 128, "actorder": True}), False),
    (_doc({"num_bits": 4, "group_size": 128, "actorder": "weight"}), True),
    (_doc({"num_bits": 4, "group_size": -2}), False),
    (_doc({"num_bits": 4, "zero_point": True}), False),
    (_doc({"num_bits": 16, "type": "float"}), False),
    (_doc({"num_bits": 8, "type": "fixed"}), False),
    (_doc(scheme={"input_activations": {"num_bits": 8, "strategy": "channel"}}), False),
    (_doc(scheme={"input_activations": {"num_bits": 8, "dynamic": True, "strategy": "token"}}), True),
    (_doc(scheme={"format": "mixed-precision"}), False),
    (_doc(scheme={"format": "float-quantized", "weights": {"num_bits": 8, "type": "float"}}), True),
    (_doc(scheme={"bits": 4}), False),
    ({"quant_method": "compressed-tensors", "config_groups": {"W4A16": ["Linear"]}}, True),
    ({"quant_method": "compressed-tensors", "config_groups": {"W9A9": ["Linear"]}}, False),
    (_doc({"num_bits": 4}, quantization_status="Compressed"), False),
    (_doc({"num_bits": 4}, kv_cache_scheme={"num_bits": 8, "type": "float", "strategy": "tensor"}), True),
    (_doc({"num_bits": 4}, kv_cache_scheme={"num_bits": 8, "strategy": "token"}), False),
)


@pytest.mark.parametrize(("doc", "accepted"), AGREE, ids=[json.dumps(d)[40:110] for d, _ in AGREE])
def test_same_decision(doc: dict[str, Any], accepted: bool) -> None:
    """(b) Both accept, or both refuse (and the listed answer is compressed-tensors')."""
    other = theirs(doc)
    parsed = qd.parse(doc)
    assert (not isinstance(other, Exception)) == accepted, other
    assert isinstance(parsed, qd.Ok) == accepted, parsed
    if isinstance(parsed, qd.Ok):
        assert isinstance(parsed.value, qd.CompressedTensors)
        assert config_difference(parsed.value, other) is None


class Divergence(NamedTuple):
    """A document compressed-tensors accepts and we refuse, on purpose."""

    name: str
    witness: dict[str, Any]
    reason: str


DIVERGENCES: Final[tuple[Divergence, ...]] = (
    Divergence("zero-bits", _doc({"num_bits": 0}), "0-bit weights store nothing; compressed-tensors checks no range"),
    Divergence("int-beyond-32-bits", _doc({"num_bits": 40}), "no integer tensor dtype holds 40-bit values"),
    Divergence("ignore-regex", _doc({"num_bits": 4}, ignore=["re:.*mlp.(gate"]),
               "an ignore pattern that does not compile fails only when the model is matched at load"),
    Divergence("unknown-format", _doc({"num_bits": 4}, format="pack-quantised"),
               "a misspelt storage format names no compressor; compressed-tensors takes any string at the top level"),
    Divergence("zero-group", _doc({"num_bits": 4, "strategy": "tensor", "group_size": 0}),
               "group_size 0 is no group; compressed-tensors lets it pass beside an explicit non-group strategy"),
)


@pytest.mark.parametrize("row", DIVERGENCES, ids=lambda r: r.name)
def test_divergence_is_real(row: Divergence) -> None:
    """(c) Each witness is accepted by compressed-tensors and refused by us."""
    other = theirs(row.witness)
    assert not isinstance(other, Exception), f"compressed-tensors refuses it too: {other}"
    assert isinstance(qd.parse(row.witness), qd.Err)


def _transformers_dict(doc: dict[str, Any]) -> Any:
    """What Transformers writes for a compressed-tensors document (its class built with compressed-tensors)."""
    import copy
    import logging

    transformers = pytest.importorskip("transformers")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = transformers.CompressedTensorsConfig.from_dict(copy.deepcopy(doc))
    return json.loads(json.dumps(cfg.to_dict(), default=str))


@settings(max_examples=30)
@given(config=CONFIG_STRATEGIES[qd.CompressedTensors])
def test_transformers_dump_agrees(config: qd.CompressedTensors) -> None:
    """dump(style="transformers") is CompressedTensorsConfig.to_dict(), key for key (presets aside:
    compressed-tensors expands them from its own table, a deliberate difference)."""
    if any(isinstance(g, qd.CtPreset) for _, g in config.config_groups or ()):
        return
    doc = qd.dump(config)
    ours = qd.dump(config, style="transformers")
    theirs_ = _transformers_dict(doc)
    assert ours == theirs_, f"{json.dumps(ours)}\n!=\n{json.dumps(theirs_)}"


@pytest.mark.parametrize("path", sorted(__import__("pathlib").Path(__file__).resolve().parents[3].glob(
    "shared/realworld/configs/compressed-tensors/*.json"), key=str) or ["none"], ids=str)
def test_real_configs_transformers_dump_agrees(path: Any) -> None:
    """The real compressed-tensors configs: Transformers writes what we say it writes."""
    if path == "none":
        pytest.skip("no corpus")
    doc = json.loads(path.read_text(encoding="utf-8"))
    parsed = qd.parse(doc)
    assert isinstance(parsed, qd.Ok)
    assert qd.dump(parsed.value, style="transformers") == _transformers_dict(doc)
