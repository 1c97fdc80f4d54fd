"""Quiet by default: ``load``, ``generate`` and ``inspect`` print their progress and their result,
nothing else, even with every optional package of the dev extra installed (torchao, gptqmodel,
bitsandbytes); what third-party imports print goes to the ``quantdispatch.thirdparty`` logger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import quantdispatch as qd

from .ckpt import base_model, gptq_quantizer, write_quantized

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quiet")
    config = qd.Gptq(bits=4, group_size=32)
    write_quantized(root / "gptq", base_model(), config, gptq_quantizer(config))
    base_model(seed=2).save_pretrained(root / "dense")
    found = {"gptq": root / "gptq", "dense": root / "dense"}
    try:
        from tests.gguf_models import T, tiny_model, write_gguf

        found["gguf"] = write_gguf(tiny_model("llama"), "llama", root / "m.gguf", T.Q4_0)
    except ImportError:
        pass
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "TORCH_LOGS"))}
    return subprocess.run([sys.executable, "-m", "quantdispatch", *args], capture_output=True, text=True, timeout=300, env=env,
                          stdin=subprocess.DEVNULL)


def _noise(stderr: str) -> list[str]:
    """stderr lines that are not our progress."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and "loading weights: file" not in line]


@pytest.mark.parametrize("which", ["gptq", "gguf"])
def test_load_prints_progress_and_result_only(checkpoints: dict[str, Path], which: str) -> None:
    if which not in checkpoints:
        pytest.skip("gguf is not installed")
    done = _run("load", str(checkpoints[which]), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert _noise(done.stderr) == []
    assert done.stdout.startswith(str(checkpoints[which])) and "loaded:" in done.stdout
    assert "Failed to load" not in done.stdout and "_pytree" not in done.stdout


def test_inspect_prints_its_result_only(checkpoints: dict[str, Path]) -> None:
    done = _run("inspect", str(checkpoints["gptq"]))
    assert done.returncode == 0 and _noise(done.stderr) == [], done.stderr


def test_what_third_party_imports_print_reaches_the_logger(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """contained() keeps a noisy body's output (Python streams and file descriptors) off the
    terminal and logs it at DEBUG; the environment it changed is put back."""
    import logging

    from quantdispatch.quiet import contained

    with caplog.at_level(logging.DEBUG, logger="quantdispatch.thirdparty"), contained("import noisy"):
        print("banner from python")
        sys.stderr.write("warning from python\n")
        os.write(2, b"line from C\n")
        os.environ["QD_TEST_NOISE"] = "1"
    out, err = capfd.readouterr()
    assert "banner" not in out + err and "line from C" not in out + err
    assert "QD_TEST_NOISE" not in os.environ
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "banner from python" in logged and "line from C" in logged and "import noisy" in logged


def test_a_bitsandbytes_load_prints_nothing(checkpoints: dict[str, Path]) -> None:
    """Quantize-on-load through Transformers' bitsandbytes integration, in a fresh process: neither
    bitsandbytes' kernel-hub notice nor Transformers' "Loading weights" bar reaches the terminal,
    and Transformers' progress-bar switch is as it was."""
    pytest.importorskip("bitsandbytes")
    script = ("import quantdispatch as qd, sys\n"
              "from transformers.utils import logging as l\n"
              f"r = qd.load({str(checkpoints['dense'])!r}, device='cpu', quantization=qd.Bnb4Bit(quant_type='nf4'))\n"
              "print(r.unwrap().plan.backend.name, l.is_progress_bar_enabled())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["bitsandbytes-4bit", "True"] and done.stderr.strip() == "", done.stderr


def test_generate_prints_the_text_only() -> None:
    """generate on a real GGUF file (llama2.c's stories260K, its tokenizer in the metadata): stdout
    is the continued prompt, stderr only our progress."""
    from tests.conftest import REALWORLD

    stories = REALWORLD / "gguf" / "crabml__tinyllamas-stories-260k-f32.gguf"
    if not stories.is_file():
        pytest.skip("the shared real-world corpus is not beside the repository")
    done = _run("generate", str(stories), "--prompt", "Once upon a time", "--max-new-tokens", "4", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert _noise(done.stderr) == [] and done.stdout.startswith("Once upon a time"), (done.stdout, done.stderr)
