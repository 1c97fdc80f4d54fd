"""The ``gptqmodel-torch`` backend: GPTQModel's own ``TorchLinear`` in every packed layer.

Dispatch (no GPTQModel needed): where the environment lists gptqmodel, the backend is a candidate
ranked below the portable kernel (measured slower, ``benchmarks/bench_gptq_forward.py``) and is
chosen when asked for by name; without gptqmodel it is rejected as not installed.

Loading (skipped without gptqmodel): tiny llama checkpoints written by our RTN writer (GPTQ v1
and v2, 2/3/4/8-bit, sym and asym, act-order) load through it, and their float16 logits

- equal GPTQModel's own reload of the same directory (``BACKEND.TORCH``, eager) exactly: the same
  module class, the same tensors (its v1 -> v2 conversion and ours agree), the same arithmetic;
- match our portable module in float16 within 4 float16 ulps of the largest logit (the two round
  the same weights and accumulate in a different order).

Importing gptqmodel leaves the environment variables and the process's output as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Literal

import pytest
import torch

import quantdispatch as qd
from quantdispatch.configs.gptq import GPTQ_BITS
from quantdispatch.jsonvalue import JsonObject, freeze
from quantdispatch.plan import RANKED_BELOW
from tests.loading.ckpt import gptq_quantizer, write_quantized

torch.set_num_threads(1)

TORCH: Final = qd.Package("torch", qd.Version.parse("2.13.0"))
GPTQMODEL: Final = qd.Package("gptqmodel", qd.Version.parse("7.6.0"))


def _plan(config: qd.AbstractGptq, *packages: qd.Package, **options: Any) -> qd.Result[qd.LoadPlan, qd.Issues]:
    env = qd.Environment(packages=packages, devices=(qd.Cpu(),))
    return qd.plan(config, env, qd.LoadOptions(device="cpu", executable=True, **options))


def _ok(result: qd.Result[qd.LoadPlan, qd.Issues]) -> qd.LoadPlan:
    assert isinstance(result, qd.Ok), result
    return result.value


def _reasons(p: qd.LoadPlan) -> dict[str, tuple[str, ...]]:
    return {r.backend: r.reasons for r in p.rejected}


# --- dispatch -------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", GPTQ_BITS)
def test_installed_gptqmodel_is_a_fallback_below_the_portable_kernel(bits: Literal[2, 3, 4, 8]) -> None:
    """With gptqmodel installed and a float16/bfloat16 plan, gptqmodel-torch is usable but ranked last,
    below the portable kernel (and, for 8 bits in bfloat16, the dense CPU backend)."""
    for dtype in (qd.DType.BFLOAT16, qd.DType.FLOAT16):
        p = _ok(_plan(qd.Gptq(bits=bits, group_size=32), TORCH, GPTQMODEL, dtype=dtype))
        assert p.backend.name == ("cpu-dense" if bits == 8 and dtype is qd.DType.BFLOAT16 else "torch-packed")
        assert p.rejected[-1] == qd.Rejection("gptqmodel-torch", (RANKED_BELOW,))


def test_without_gptqmodel_it_is_rejected_as_not_installed() -> None:
    """An environment without gptqmodel rejects the backend for that reason alone."""
    p = _ok(_plan(qd.GptqV2(bits=4, desc_act=True, sym=False), TORCH, dtype=qd.DType.BFLOAT16))
    assert p.backend.name == "torch-packed"
    assert _reasons(p)["gptqmodel-torch"] == ("needs gptqmodel>=7.6, which is not installed",)


def test_it_is_chosen_by_name_only_where_installed() -> None:
    """backend='gptqmodel-torch' picks it where gptqmodel is installed and is refused, saying why, where not."""
    p = _ok(_plan(qd.Gptq(bits=8, group_size=-1, desc_act=True, sym=False), TORCH, GPTQMODEL, backend="gptqmodel-torch",
                  dtype=qd.DType.FLOAT16))
    assert p.backend.name == "gptqmodel-torch" and p.backend.loader == "quantdispatch.backends.gptqmodel:load_torch"
    refused = _plan(qd.Gptq(bits=8), TORCH, backend="gptqmodel-torch", dtype=qd.DType.FLOAT16)
    assert isinstance(refused, qd.Err) and refused.error[0].code == "plan.no_usable_backend"
    assert "gptqmodel-torch: needs gptqmodel>=7.6, which is not installed" in refused.error[0].message


def test_unfit_group_sizes_and_float32_are_named() -> None:
    """TorchLinear's group sizes and compute dtypes (read from its SUPPORTS_* attributes) are its fit rules."""
    p = _ok(_plan(qd.Gptq(bits=4, group_size=48), TORCH, GPTQMODEL, dtype=qd.DType.BFLOAT16))
    assert _reasons(p)["gptqmodel-torch"] == (
        "GPTQModel's TorchLinear takes group_size in [-1, 16, 32, 64, 128, 256, 512, 1024], not 48",)
    f32 = _ok(_plan(qd.Gptq(bits=4), TORCH, GPTQMODEL, dtype=qd.DType.FLOAT32))
    assert _reasons(f32)["gptqmodel-torch"] == ("does not compute in float32 (supports float16, bfloat16)",)


def test_on_cuda_it_follows_marlin_and_the_portable_kernel() -> None:
    """On a GPU (unmeasured there) it is offered after Marlin and the portable kernel."""
    env = qd.Environment(packages=(TORCH, GPTQMODEL), devices=(qd.Cpu(), qd.Cuda(capability=(8, 0))))
    p = _ok(qd.plan(qd.Gptq(bits=3), env, qd.LoadOptions(executable=True)))
    assert p.backend.name == "torch-packed" and [r.backend for r in p.rejected] == ["gptqmodel-marlin", "gptqmodel-torch"]


# --- import containment ---------------------------------------------------------------------------

def test_contained_import_restores_environment_and_swallows_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    """A module that prints (Python and file-descriptor level), sets and changes environment variables
    and configures the root logger leaves none of it behind when imported through import_contained."""
    from quantdispatch.backends.gptqmodel import import_contained

    (tmp_path / "noisy_qd_probe.py").write_text(textwrap.dedent("""
        import logging, os, sys
        print("BANNER on stdout")
        os.write(2, b"C-level line on fd 2\\n")
        os.environ["PYTORCH_ALLOC_CONF"] = "expandable_segments:True"
        os.environ["QD_PROBE_CHANGED"] = "theirs"
        logging.basicConfig(level=logging.INFO)
        VALUE = 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("QD_PROBE_CHANGED", "ours")
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    root = __import__("logging").getLogger()
    handlers, level = list(root.handlers), root.level
    before = dict(os.environ)
    module = import_contained("noisy_qd_probe")
    assert not isinstance(module, qd.Issue) and module.VALUE == 42
    assert dict(os.environ) == before
    assert root.handlers == handlers and root.level == level
    out, err = capfd.readouterr()
    assert "BANNER" not in out and "C-level" not in err


def test_a_failing_import_is_an_issue_quoting_its_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An import that raises becomes an issue carrying the exception and what the module printed."""
    from quantdispatch.backends.gptqmodel import import_contained

    (tmp_path / "broken_qd_probe.py").write_text("print('half-way there')\nraise RuntimeError('no kernels here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = import_contained("broken_qd_probe")
    assert isinstance(found, qd.Issue) and found.code == "load.gptqmodel.import"
    assert "RuntimeError: no kernels here" in found.message and "half-way there" in found.message


# --- loading ----------------------------------------------------------------------------------------

_PRODUCED_BY_GPTQMODEL = freeze({"quantizer": ["gptqmodel:7.6.0"]})
assert isinstance(_PRODUCED_BY_GPTQMODEL, JsonObject)

CASES: Final[dict[str, qd.AbstractGptq]] = {
    # GPTQModel refuses asymmetric v1 checkpoints that do not say GPTQModel >= 0.9 made them (old AutoGPTQ
    # zero-point overflow, gptqmodel/models/loader.py); its reload is the oracle here, so they say so.
    "v1-4b-g32-sym": qd.Gptq(bits=4, group_size=32),
    "v1-4b-g32-asym-act": qd.Gptq(bits=4, group_size=32, sym=False, desc_act=True, meta=_PRODUCED_BY_GPTQMODEL),
    "v2-4b-g128-asym": qd.GptqV2(bits=4, group_size=128, sym=False),
    "v1-8b-g32-asym-act": qd.Gptq(bits=8, group_size=32, sym=False, desc_act=True, meta=_PRODUCED_BY_GPTQMODEL),
    "v2-8b-gall-sym-act": qd.GptqV2(bits=8, group_size=-1, desc_act=True),
    "v1-3b-g32-asym": qd.Gptq(bits=3, group_size=32, sym=False, meta=_PRODUCED_BY_GPTQMODEL),
    "v2-2b-g64-asym-act": qd.GptqV2(bits=2, group_size=64, sym=False, desc_act=True),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 1-layer llama with its tokenizer (GPTQModel's loader wants one), saved once."""
    pytest.importorskip("gptqmodel")
    from tests.kernels.test_vs_gptqmodel import _tiny_model
    return _tiny_model("llama", tmp_path_factory.mktemp("llama-base"))


@pytest.fixture(scope="module", params=sorted(CASES))
def checkpoint(request: pytest.FixtureRequest, base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The base model RTN-quantized in the case's layout, with the base's tokenizer."""
    from transformers import AutoModelForCausalLM

    name: str = request.param
    config = CASES[name]
    out = tmp_path_factory.mktemp(name)
    write_quantized(out, AutoModelForCausalLM.from_pretrained(base).eval(), config, gptq_quantizer(config, act_order=config.desc_act))
    for f in base.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, out / f.name)
    yield name, out


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    # GPTQModel's loader wraps each TorchLinear's dequantize in torch.compile; its eager arithmetic is the oracle.
    with torch.no_grad(), torch._dynamo.config.patch(disable=True):
        out: torch.Tensor = model(ids).logits.float()
    return out


def test_logits_equal_gptqmodels_reload_and_match_the_portable_module(checkpoint: tuple[str, Path]) -> None:
    """Every packed layer runs GPTQModel's TorchLinear; the logits are GPTQModel's own, and our portable module's within 4 fp16 ulps."""
    from gptqmodel import BACKEND, GPTQModel
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear

    name, directory = checkpoint
    ids = torch.randint(3, 200, (2, 16), generator=torch.Generator().manual_seed(0))
    ours = qd.load(directory, device="cpu", dtype="float16", backend="gptqmodel-torch").unwrap()
    layers = [m for n, m in ours.model.named_modules() if n.endswith("_proj")]
    assert len(layers) == 7 and all(type(m) is TorchLinear for m in layers), [type(m) for m in layers]
    portable = qd.load(directory, device="cpu", dtype="float16", backend="torch-packed").unwrap()
    theirs = GPTQModel.load(str(directory), device="cpu", dtype=torch.float16, backend=BACKEND.TORCH)
    a, p, t = _logits(ours.model, ids), _logits(portable.model, ids), _logits(theirs.model, ids)
    # The config GPTQModel read made a temporary offload directory; left to the garbage collector it warns.
    theirs.quantize_config._offload_temp_dir.cleanup()
    assert torch.equal(a, t), (name, (a - t).abs().max().item())
    ulp = 2.0 ** (torch.floor(torch.log2(a.abs().max())).item() - 10)
    assert (a - p).abs().max().item() <= 4 * ulp, (name, (a - p).abs().max().item(), ulp)


def test_loading_leaves_environment_and_output_alone(base: Path, tmp_path: Path) -> None:
    """In a fresh process, a load through gptqmodel-torch (its first gptqmodel import) changes no
    environment variable and prints nothing: GPTQModel's banner and log lines are swallowed."""
    config = CASES["v1-4b-g32-sym"]
    from transformers import AutoModelForCausalLM

    directory = tmp_path / "ckpt"
    write_quantized(directory, AutoModelForCausalLM.from_pretrained(base).eval(), config, gptq_quantizer(config))
    script = textwrap.dedent(f"""
        import json, os, sys
        import torch
        import quantdispatch as qd
        before = dict(os.environ)
        assert "gptqmodel" not in sys.modules
        loaded = qd.load({str(directory)!r}, device="cpu", dtype="float16", backend="gptqmodel-torch").unwrap()
        assert "gptqmodel" in sys.modules
        changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
        sys.stdout.write("RESULT " + json.dumps([changed, type(loaded.model.model.layers[0].mlp.up_proj).__name__]))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTORCH_ALLOC_CONF", "CUDA_DEVICE_ORDER", "HF_HOME")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("RESULT "), done.stdout[:2000]
    changed, kind = json.loads(done.stdout.removeprefix("RESULT "))
    assert changed == [] and kind == "TorchLinear"
    assert "GPT-QModel" not in done.stderr and "PYTORCH_ALLOC_CONF" not in done.stderr, done.stderr[-2000:]
