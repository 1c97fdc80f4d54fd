"""AutoRound's integer exports map to the GPTQ and AWQ layouts their packing_format stores, the
planner offers those layouts' kernels before the auto-round package, and every export that is no
layout keeps the package with the reason shown."""

from __future__ import annotations

import pytest

import quantdispatch as qd
from quantdispatch.codec import parse
from quantdispatch.environment import Cpu, CpuFeatures, Cuda
from quantdispatch.jsonvalue import JsonObject
from quantdispatch.kernel import kernel_candidates
from quantdispatch.layouts import AwqPacked, GptqPacked, layout_of
from quantdispatch.layouts.auto_round import auto_round_layout
from quantdispatch.rules import compute_dtype, select_backend
from quantdispatch.validate import validate

CPU = Cpu(features=CpuFeatures(avx2=True, fma=True))


def _config(**fields: object) -> qd.AbstractAutoRound:
    """A config parsed from the keys AutoRound's save_quantized_as_autoround writes."""
    doc = {"autoround_version": "0.15.0", "bits": 4, "block_name_to_quantize": "model.layers", "data_type": "int",
           "group_size": 128, "quant_method": "auto-round", "static_attention_granularity": "tensor",
           "static_kv_granularity": "tensor", "sym": True, **fields}
    found = parse(doc)
    assert isinstance(found, qd.Ok), found
    config = found.value
    assert isinstance(config, qd.AbstractAutoRound)
    return config


@pytest.mark.parametrize("packing_format,bits,sym,expected", [
    ("auto_round:auto_gptq", 4, True, GptqPacked(bits=4, group_size=128, v1=True)),
    ("auto_round:auto_gptq", 3, False, GptqPacked(bits=3, group_size=128, v1=True)),
    ("auto_round:gptq", 8, True, GptqPacked(bits=8, group_size=128, v1=True)),
    ("auto_round:gptq:exllamav2", 4, True, GptqPacked(bits=4, group_size=128, v1=True)),
    ("auto_round:gptqmodel", 2, False, GptqPacked(bits=2, group_size=128, v1=False)),
    ("auto_round", 2, False, GptqPacked(bits=2, group_size=128, v1=False)),
    ("auto_round", 8, True, GptqPacked(bits=8, group_size=128, v1=False)),
    ("auto_round:auto_awq", 4, False, AwqPacked(bits=4, group_size=128, version="gemm")),
    ("auto_round:awq", 4, True, AwqPacked(bits=4, group_size=128, version="gemm")),
])
def test_each_integer_packing_is_an_existing_layout(packing_format: str, bits: int, sym: bool, expected: object) -> None:
    """Only auto_gptq (and the spellings AutoRound's reader maps to it) stores zero points minus one."""
    assert layout_of(_config(packing_format=packing_format, bits=bits, sym=sym)) == expected


def test_a_missing_packing_format_is_transformers_default_gptq_v1() -> None:
    """Transformers' AutoRoundConfig sets packing_format auto_round:gptq when the file has none."""
    assert layout_of(_config()) == GptqPacked(bits=4, group_size=128, v1=True)


@pytest.mark.parametrize("fields,reason", [
    ({"packing_format": "auto_round:llm_compressor", "data_type": "mx_fp"}, "data_type 'mx_fp'"),
    ({"packing_format": "auto_round:llm_compressor"}, "not one of AutoRound's integer packings"),
    ({"packing_format": "auto_round:fp8_static"}, "not one of AutoRound's integer packings"),
    ({"packing_format": "auto_round", "data_type": "mx_int"}, "data_type 'mx_int'"),
    ({"packing_format": "auto_round:auto_gptq", "act_bits": 8}, "act_bits 8"),
    ({"packing_format": "auto_round", "bits": 6, "sym": False}, "not 6-bit"),
    ({"packing_format": "auto_round:auto_gptq",
      "extra_config": {"model.layers.0.mlp.down_proj": {"bits": 8}}}, "own width or group size"),
])
def test_what_is_no_layout_says_why(fields: dict[str, object], reason: str) -> None:
    """No layout (``None``), and the reason is the portable kernel's, before the auto-round package."""
    config = _config(**fields)
    assert layout_of(config) is None
    why = auto_round_layout(config)
    assert isinstance(why, str) and reason in why
    selection = select_backend(config, CPU)
    assert not isinstance(selection, qd.Refusal)
    assert [c.backend.name for c in selection] == ["torch-packed", "auto-round"] and selection[0].unfit == (why,)


def test_layers_left_in_full_precision_do_not_prevent_the_layout() -> None:
    """extra_config entries of 16 bits are layers stored dense (their ``weight``), which the loader keeps."""
    config = _config(packing_format="auto_round:auto_gptq", extra_config={"lm_head": {"bits": 16, "data_type": "float"}})
    assert layout_of(config) == GptqPacked(bits=4, group_size=128, v1=True)


@pytest.mark.parametrize("device", [CPU, Cuda(capability=(8, 0))], ids=["cpu", "cuda"])
def test_the_layout_kernels_come_before_the_auto_round_package(device: Cpu | Cuda) -> None:
    """The selection is the layout's kernel ranking, then auto-round; dtype rules are GPTQ's."""
    config = _config(packing_format="auto_round:auto_gptq")
    layout = layout_of(config)
    selection = select_backend(config, device)
    assert not isinstance(selection, qd.Refusal)
    assert selection == (*kernel_candidates(layout, device), selection[-1]) and selection[-1].backend.name == "auto-round"
    assert compute_dtype(config, device) == compute_dtype(qd.Gptq(bits=4), device)


def test_awq_packing_of_three_bits_is_an_issue() -> None:
    """AutoRound's AWQ exporter refuses any width but 4: such a config describes no checkpoint."""
    found = validate(_config(packing_format="auto_round:auto_awq", bits=3))
    assert isinstance(found, qd.Err) and [i.code for i in found.error] == ["auto-round.bits.awq"]


def test_extra_config_is_kept_as_written() -> None:
    """The per-layer overrides stay in extras, so dump writes them back."""
    config = _config(extra_config={"lm_head": {"bits": 16}})
    assert isinstance(config.extras.get("extra_config"), JsonObject)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_auto_gptq_zero_points_of_zero_survive_the_borrow(bits: int) -> None:
    """qlinear_torch_zp.py packs each word as the int32 sum of ``(z - 1) << (bits * j)``, so a zero
    point of 0 borrows from the next field; the v1 reader undoes it word-wise (as GPTQModel does), and
    our v1 writer produces the same words."""
    import torch

    from quantdispatch.kernels.gptq import pack_gptq_qzeros, unpack_gptq_qzeros

    per = 32 // bits
    zeros = torch.randint(0, 1 << bits, (3, 2 * per), generator=torch.Generator().manual_seed(bits))
    zeros[:, 0] = zeros[:, per + 1] = 0
    words = ((zeros - 1).reshape(3, 2, per) << (torch.arange(per) * bits)).sum(-1)
    words = ((words + (1 << 31)) % (1 << 32) - (1 << 31)).to(torch.int32)
    assert torch.equal(unpack_gptq_qzeros(words, bits, True).long(), zeros)
    assert torch.equal(pack_gptq_qzeros(zeros, bits, True), words)
