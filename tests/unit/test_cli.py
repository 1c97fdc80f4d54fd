"""The command line: output, --json and exit statuses 0 / 1 / 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantdispatch.cli import main


def _write(path: Path, value: object) -> str:
    path.write_text(json.dumps(value))
    return str(path)


def test_check_ok_and_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One line per input, every issue with its code; status 1 when any input is invalid."""
    good = _write(tmp_path / "good.json", {"quant_method": "gptq", "bits": 4})
    bad = _write(tmp_path / "bad.json", {"load_in_4bit": True, "load_in_8bit": True})
    assert main(["check", good]) == 0
    assert "good.json: ok: Gptq" in capsys.readouterr().out
    assert main(["check", good, bad]) == 1
    out = capsys.readouterr().out
    assert "bad.json: invalid (1 issue)" in out and "bnb.load_in.conflict at $" in out


def test_check_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one record per input with the issues as objects."""
    bad = _write(tmp_path / "bad.json", {"quant_method": "GPTQ"})
    assert main(["check", "--json", bad]) == 1
    records = json.loads(capsys.readouterr().out)
    assert records[0]["ok"] is False and records[0]["issues"][0]["code"] == "method.unknown"


def test_usage_error_is_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A usage error exits with status 2."""
    with pytest.raises(SystemExit) as e:
        main(["check"])
    assert e.value.code == 2
    capsys.readouterr()


def test_inspect_prints_config_environment_and_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """inspect shows the typed config, the environment and the plan; no plan is status 1."""
    good = _write(tmp_path / "config.json", {"quantization_config": {"quant_method": "awq", "version": "gemm"}})
    code = main(["inspect", "--no-devices", good])
    out = capsys.readouterr().out
    assert "environment:" in out and "AwqGemm (awq)" in out
    from quantdispatch.probing import cpu_features

    # The test environment has torch; an AVX2/AVX-512 CPU gets an int4 kernel, the portable one otherwise.
    f = cpu_features()
    backend = "cpu-q4-q8dot" if f.avx2 and f.fma else "cpu-int4" if f.vector_int4 else "torch-packed"
    assert code == 0 and f"backend:  {backend}" in out
    marlin = _write(tmp_path / "m.json", {"quant_method": "awq", "version": "marlin"})
    assert main(["inspect", "--no-devices", marlin]) == 1
    assert "awq.marlin.needs_cuda" in capsys.readouterr().out


def test_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo checks the built-in examples and plans one on three environments."""
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "broken-contradictory.json: invalid" in out and "backend:  gptqmodel-marlin" in out
