"""Every export format GPTQModel 7.6 lists (``GPTQ_EXPORT_FORMATS``, ``AWQ_EXPORT_FORMATS`` in
``gptqmodel/quantization/config.py``) parses from the ``quantization_config`` its ``to_dict``
writes to the layout that format stores, or to a coded reason why it has none.

``gptq`` is v1 on disk: GPTQModel packs v2 zero points and converts them back before saving
(``convert_gptq_v2_to_v1_format_module`` in ``gptqmodel/utils/model.py``). The tensors themselves are
checked against GPTQModel's own reload in ``tests/loading/test_load_vs_gptqmodel.py``."""

from __future__ import annotations

import json
from typing import Final

import pytest

import quantdispatch as qd
from quantdispatch.layouts import AwqPacked, GptqPacked, layout_of

pytest.importorskip("gptqmodel")

EXPECTED: Final[dict[tuple[str, str], object]] = {
    ("gptq", "gptq"): GptqPacked(bits=4, group_size=128, v1=True),
    ("gptq", "gptq_v2"): GptqPacked(bits=4, group_size=128, v1=False),
    ("gptq", "gptq_p"): "gptq.format.unsupported",     # planar: split bit planes, read by its own kernel
    ("gptq", "marlin"): "gptq.format.unsupported",     # tiled for Marlin (7.6 no longer quantizes into it)
    ("gptq", "bitblas"): "gptq.format.unsupported",    # tiled for BitBLAS
    ("awq", "gemm"): AwqPacked(bits=4, group_size=128, version="gemm"),
    ("awq", "gemv"): AwqPacked(bits=4, group_size=128, version="gemv"),
    ("awq", "gemv_fast"): AwqPacked(bits=4, group_size=128, version="gemv_fast"),
    ("awq", "marlin"): None,                           # AwqMarlin: planned for the Marlin CUDA kernel only
    ("awq", "llm-awq"): None,                          # AwqLlm: no portable module reads it
    ("awq", "bitblas"): "awq.version.unsupported",
}


def test_the_table_covers_every_export_format() -> None:
    """A format GPTQModel adds shows up here as a missing row."""
    from gptqmodel.quantization.config import AWQ_EXPORT_FORMATS, GPTQ_EXPORT_FORMATS

    listed = {("gptq", f.value) for f in GPTQ_EXPORT_FORMATS} | {("awq", f.value) for f in AWQ_EXPORT_FORMATS}
    assert listed == set(EXPECTED)


@pytest.mark.parametrize("method,fmt", sorted(EXPECTED), ids=lambda v: str(v))
def test_each_export_format_has_its_layout_or_a_coded_reason(method: str, fmt: str) -> None:
    """The layout, ``None`` for a type planned without one, or the parse issue's code."""
    from gptqmodel import QuantizeConfig

    config = QuantizeConfig(bits=4, group_size=128, quant_method=method, format=fmt, offload_to_disk=False)
    written = json.loads(json.dumps(config.to_dict(), default=str))
    assert written["checkpoint_format"] == fmt and written["pack_dtype"] == "int32" and "meta" in written
    found = qd.parse(written)
    expected = EXPECTED[(method, fmt)]
    if isinstance(expected, str):
        assert isinstance(found, qd.Err) and [i.code for i in found.error] == [expected]
    else:
        assert isinstance(found, qd.Ok), found
        assert layout_of(found.value) == expected
