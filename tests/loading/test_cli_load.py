"""The CLI commands that touch weights: load, generate, and the demo's loading half."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import quantdispatch as qd
from quantdispatch.cli import main

from .ckpt import base_model, gptq_quantizer, write_quantized


def _tokenizer(directory: Path) -> None:
    """A tiny byte-level BPE tokenizer trained on the spot, saved beside the checkpoint."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256, special_tokens=["<unk>", "<s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["once upon a time there was a tiny model"] * 20, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>").save_pretrained(directory)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    config = qd.Gptq(bits=4, group_size=32)
    write_quantized(tmp_path / "m", base_model(), config, gptq_quantizer(config))
    return tmp_path / "m"


def test_load_prints_plan_and_costs(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """load prints the plan, the parameter count and bytes on disk and in memory; --json one record."""
    assert main(["load", str(checkpoint), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    from quantdispatch.probing import cpu_features

    f = cpu_features()  # the native int8-activation kernel wherever AVX2 and FMA are, torch's int4 kernel on other vector CPUs
    backend = "cpu-q4-q8dot" if f.avx2 and f.fma else "cpu-int4" if f.vector_int4 else "torch-packed"
    assert f"backend:  {backend}" in out and "parameters" in out and "MiB on disk" in out
    assert main(["load", str(checkpoint), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ok"] and record["backend"] == backend and record["bytes_on_disk"] > 0


def test_load_reports_issues_with_status_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", str(tmp_path / "missing")]) == 1
    assert "file.missing" in capsys.readouterr().out


def test_generate_needs_a_tokenizer_then_continues_the_prompt(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a tokenizer: a clear issue; an empty prompt: another; with both: the prompt is
    continued by the quantized model (--json: one record holding the text)."""
    assert main(["generate", str(checkpoint), "--prompt", "once upon"]) == 1
    assert "generate.tokenizer.missing" in capsys.readouterr().out
    _tokenizer(checkpoint)
    assert main(["generate", str(checkpoint), "--prompt", ""]) == 1  # refused before any weight is read
    assert "generate.prompt.empty" in capsys.readouterr().out
    torch.manual_seed(0)
    assert main(["generate", str(checkpoint), "--prompt", "once upon", "--max-new-tokens", "5"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("once upon")
    assert main(["generate", str(checkpoint), "--prompt", "once upon", "--max-new-tokens", "5", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ok"] is True and record["text"].startswith("once upon")


def test_load_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The main job's loading half: four quantized checkpoints planned and loaded, each close to fp32."""
    assert main(["demo", "--load"]) == 0
    out = capsys.readouterr().out
    assert out.count("logits vs fp32") == 4
    cosines = [float(line.rsplit("cosine ", 1)[1].split(";")[0]) for line in out.splitlines() if "cosine" in line]
    assert all(c > 0.9 for c in cosines)


def test_bench_reports_prefill_and_decode_speed(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bench loads through the plan and reports the kernels, prefill and decode tokens/s; --json one record."""
    assert main(["bench", str(checkpoint), "--device", "cpu", "--prompt-tokens", "8", "--new-tokens", "4", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "prefill:" in out and "decode:" in out and "tokens/s" in out and "layers:" in out
    assert main(["bench", str(checkpoint), "--json", "--backend", "torch-packed", "--new-tokens", "3", "--threads", "1"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["backend"] == "torch-packed" and record["layers"] == {"GptqLinear": 14} and record["threads"] == 1
    assert record["prefill_tokens_per_s"] > 0 and record["decode_tokens_per_s"] > 0
    # The memory limit: bandwidth / bytes per token, and the fraction decode reached of it.
    assert record["bytes_per_token"] > 0 and record["copy_bandwidth_gb_s"] > 0
    limit = record["copy_bandwidth_gb_s"] * 1e9 / record["bytes_per_token"]
    assert record["limit_tokens_per_s"] == pytest.approx(limit, rel=0.01, abs=0.1)
    assert record["fraction_of_limit"] == pytest.approx(record["decode_tokens_per_s"] / record["limit_tokens_per_s"], rel=0.02)
    split = record["decode_split_ms"]  # the weight layers and the rest add up to the (hooked) step
    assert split["linear_ms"] > 0 and split["rest_ms"] > 0
    assert split["linear_ms"] + split["rest_ms"] == pytest.approx(split["step_ms"], rel=0.01)
    with pytest.raises(SystemExit) as e:  # a usage error, from argparse
        main(["bench", str(checkpoint), "--new-tokens", "0"])
    assert e.value.code == 2
    capsys.readouterr()


def _cli(args: list[str], stdin: bytes | None = b"y\n", closed_stdin: bool = False) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m quantdispatch`` as a user would, ``y`` piped in (or stdin closed)."""
    env = {**os.environ, "PYTHONPATH": str(Path(qd.__file__).parents[1]), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "quantdispatch", *args]
    if closed_stdin:
        return subprocess.run(["bash", "-c", 'exec "$@" <&-', "-", *command], capture_output=True, env=env, timeout=300)
    return subprocess.run(command, input=stdin, capture_output=True, env=env, timeout=300)


def _plant(directory: Path, config_file: str, entry: str) -> Path:
    """Put a module in the checkpoint that leaves a marker when imported, and name it in
    ``config_file``'s ``auto_map``; return where the marker would appear."""
    marker = directory.parent / "RAN"
    (directory / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                       "from transformers import PreTrainedTokenizerFast, LlamaForCausalLM, LlamaConfig\n"
                                       "class EvilTokenizer(PreTrainedTokenizerFast): pass\n"
                                       "class EvilConfig(LlamaConfig): model_type = 'evil'\n"
                                       "class EvilModel(LlamaForCausalLM): config_class = EvilConfig\n")
    path = directory / config_file
    document = json.loads(path.read_text()) if path.exists() else {}
    document["auto_map"] = {entry: ["evil.EvilTokenizer", "evil.EvilTokenizer"] if entry == "AutoTokenizer" else f"evil.{entry}"}
    if entry == "AutoTokenizer":
        document["tokenizer_class"] = "EvilTokenizer"
    else:
        document["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
        document["model_type"] = "evil"
    path.write_text(json.dumps(document))
    return marker


@pytest.mark.slow
def test_generate_never_runs_a_tokenizer_from_the_checkpoint(checkpoint: Path) -> None:
    """A tokenizer_config.json whose auto_map names the checkpoint's own code, and ``y`` piped
    in: no question on stdout, the code never runs, a coded issue and status 1 (as text and as JSON)."""
    marker = _plant(checkpoint, "tokenizer_config.json", "AutoTokenizer")
    done = _cli(["generate", str(checkpoint), "--prompt", "hi"])
    out = done.stdout.decode()
    assert done.returncode == 1 and "generate.tokenizer.remote_code" in out
    assert "[y/N]" not in out + done.stderr.decode() and "custom code" not in out and not marker.exists()
    done = _cli(["generate", str(checkpoint), "--prompt", "hi", "--json"])
    record = json.loads(done.stdout)
    assert done.returncode == 1 and record["issues"][0]["code"] == "generate.tokenizer.remote_code" and not marker.exists()


@pytest.mark.slow
def test_load_and_inspect_never_read_stdin(checkpoint: Path) -> None:
    """An architecture defined by the checkpoint's code: load refuses it with ``y`` piped in and
    with stdin closed; inspect plans without touching it; the code never runs."""
    marker = _plant(checkpoint, "config.json", "AutoModelForCausalLM")
    for closed in (False, True):
        done = _cli(["load", str(checkpoint), "--device", "cpu"], closed_stdin=closed)
        assert done.returncode == 1 and "load.remote_code.refused" in done.stdout.decode(), done.stderr.decode()[-2000:]
        assert "[y/N]" not in done.stdout.decode() + done.stderr.decode()
        done = _cli(["inspect", "--no-devices", str(checkpoint)], closed_stdin=closed)
        assert done.returncode in (0, 1) and "Traceback" not in done.stderr.decode() and "[y/N]" not in done.stdout.decode()
    assert not marker.exists()


def test_stdin_is_empty_while_a_command_runs(checkpoint: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a library asks on stdin while a command runs reads end-of-file, never an answer."""
    import io

    import quantdispatch.cli_load as cli_load

    seen: list[str] = []

    def asks(args: object) -> object:
        seen.append(sys.stdin.read())
        return 1

    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    monkeypatch.setattr(cli_load, "_tokenizer", asks)
    assert main(["generate", str(checkpoint), "--prompt", "x"]) == 1
    assert seen == [""] and sys.stdin.read() == "y\n"
    capsys.readouterr()


@pytest.mark.parametrize("command", ["load", "bench"])
def test_the_cli_copies_weights_into_private_memory_unless_asked_to_map(checkpoint: Path, command: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's safe default: mmap=False (the loaded model never reads the file again); --mmap maps."""
    import quantdispatch.loading as loading

    seen: list[object] = []
    real = loading.load

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("mmap"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loading, "load", spy)
    extra = ["--new-tokens", "1", "--prompt-tokens", "2", "--repeat", "1"] if command == "bench" else []
    assert main([command, str(checkpoint), "--device", "cpu", "--dtype", "float32", *extra]) == 0
    assert main([command, str(checkpoint), "--device", "cpu", "--dtype", "float32", "--mmap", *extra]) == 0
    assert seen == [False, True]
