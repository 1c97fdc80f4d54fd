"""FP8 checkpoints load kept packed on the CPU: Transformers' fine-grained ``fp8`` (block scales),
``fbgemm_fp8`` (row scales), compressed-tensors ``float-quantized`` (tensor, channel, block) and
ModelOpt ``FP8`` (a tensor scale, an unused activation scale).

The references are the tools' own: the Transformers checkpoint is quantized by Transformers'
``Fp8Quantize`` and its oracle weights come from Transformers' ``Fp8Dequantize``; partial edge
blocks (which ``Fp8Quantize`` leaves unquantized) are written here and checked against
Transformers' ``_dequantize_fp8_weight``, the one of its functions that applies them; the
compressed-tensors checkpoints are compressed by its ``ModelCompressor`` and the oracle is its
``decompress_model``. FBGEMM's quantizer needs ``fbgemm_gpu`` and ModelOpt's a GPU, so those two
checkpoints are written here, by the formula their kernels compute with (``w * s``), written out
in the test. Each oracle is a dense Llama holding the reference weights; the packed model computes
the same float32 weights, so its logits are equal.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

import quantdispatch as qd
from quantdispatch.kernels.fp8_native import Fp8Linear, native_fp8
from quantdispatch.kernels.modules import PackedLinear
from quantdispatch.layouts import Fp8Scaled, Fp8ScaleInv, Unpackable, layout_of
from quantdispatch.result import Err

from .ckpt import base_model
from .corrupt import Change, changed
from .ct_ckpt import ct, write_with_compressed_tensors

torch.set_num_threads(1)
IDS = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(5))
E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
PROJECTIONS = 14  # 7 per decoder layer, 2 layers

# (name, tensors by suffix, the reference float32 weight)
Quantize = Callable[[str, torch.Tensor], tuple[dict[str, torch.Tensor], torch.Tensor]]


def _fp8_integration() -> Any:
    from transformers.integrations import finegrained_fp8

    return finegrained_fp8


def _write(out: Path, quantize: Quantize, quantization_config: dict[str, Any] | None, *, side: dict[str, Any] | None = None,
           seed: int = 3) -> LlamaForCausalLM:
    """A tiny Llama with every decoder projection quantized by ``quantize``; returns the dense
    model holding the reference weights."""
    model = base_model(seed=seed)
    reference: LlamaForCausalLM = LlamaForCausalLM(model.config).eval()
    reference.load_state_dict(model.state_dict())
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        module = name.rsplit(".", 1)[0]
        if name.endswith("proj.weight") and ".layers." in name:
            stored, weight = quantize(module, t)
            tensors.update((f"{module}.{k}", v.contiguous()) for k, v in stored.items())
            linear = reference.get_submodule(module)
            assert isinstance(linear, torch.nn.Linear)
            linear.weight.data.copy_(weight)
        else:
            tensors[name] = t.contiguous()
    out.mkdir(parents=True)
    save_file(tensors, str(out / "model.safetensors"))
    document = model.config.to_dict()
    if quantization_config is not None:
        document["quantization_config"] = quantization_config
    (out / "config.json").write_text(json.dumps(document))
    if side is not None:
        (out / "hf_quant_config.json").write_text(json.dumps(side))
    return reference


def transformers_quantizer(block: tuple[int, int]) -> Quantize:
    """Transformers' own FP8 quantization (``Fp8Quantize``) and dequantization (``Fp8Dequantize``)."""
    from transformers import FineGrainedFP8Config

    fp8 = _fp8_integration()
    quantizer = type("Quantizer", (), {"quantization_config": FineGrainedFP8Config(weight_block_size=block)})()

    def quantize(module: str, w: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        made = fp8.Fp8Quantize(quantizer)._quantize_one(f"{module}.weight", w)
        q, s = made[f"{module}.weight"], made[f"{module}.weight_scale_inv"]
        assert q.dtype == E4M3, "Fp8Quantize left this layer unquantized: pick a block that tiles it"
        dense = fp8.Fp8Dequantize(quantizer)._dequantize_one(q, s, output_dtype=torch.float32)
        return {"weight": q, "weight_scale_inv": s}, dense

    return quantize


def block_writer(block: tuple[int, int]) -> Quantize:
    """Block scales over a ceil grid (partial blocks at the bottom and right edges), the reference
    weight from Transformers' ``_dequantize_fp8_weight``."""
    fp8 = _fp8_integration()
    rows, cols = block

    def quantize(module: str, w: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        n, k = w.shape
        gn, gk = -(-n // rows), -(-k // cols)
        padded = torch.zeros(gn * rows, gk * cols)
        padded[:n, :k] = w
        amax = padded.view(gn, rows, gk, cols).abs().amax(dim=(1, 3))
        scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax)).float()
        full = scale.repeat_interleave(rows, 0).repeat_interleave(cols, 1)[:n, :k]
        q = (w / full).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
        dense = fp8._dequantize_fp8_weight(q, scale, [rows, cols], torch.float32)
        return {"weight": q, "weight_scale_inv": scale}, dense

    return quantize


def row_writer(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (w.abs().amax(dim=1, keepdim=True) / E4M3_MAX).float()
    return (w / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def fbgemm_quantize(module: str, w: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """FBGEMM's layout (``FbgemmFp8Linear``: ``weight`` e4m3 [N, K], ``weight_scale`` float32 [N, 1])."""
    q, scale = row_writer(w)
    return {"weight": q, "weight_scale": scale}, q.float() * scale


def modelopt_quantize(module: str, w: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """ModelOpt's FP8 export: scalar ``weight_scale`` and ``input_scale`` (float32)."""
    scale = (w.abs().amax() / E4M3_MAX).float()
    q = (w / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return {"weight": q, "weight_scale": scale, "input_scale": torch.tensor(0.0125)}, q.float() * scale


FP8_CONFIG = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [32, 32]}
MODELOPT = {"producer": {"name": "modelopt", "version": "0.31.0"}, "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": None,
                                                                                    "exclude_modules": ["lm_head"]}}


def _ct_write(out: Path, strategy: str, dtype: torch.dtype, static_inputs: bool) -> Any:
    """A checkpoint compressed by compressed-tensors (float-quantized), the dense model of its decompressed weights."""
    quantization, utils = ct("quantization"), ct("quantization.utils")
    model: Any = base_model(seed=9)
    model = model.to(dtype)
    block = [32, 48] if strategy == "block" else None
    args = quantization.QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy=strategy, block_structure=block)
    inputs = quantization.QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy="tensor", dynamic=False) if static_inputs else None

    def calibrate(module: Any, w: torch.Tensor) -> None:
        n, k = w.shape
        if strategy == "tensor":
            lo, hi = w.amin().reshape(1), w.amax().reshape(1)
        elif strategy == "channel":
            lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
        else:
            rows, cols = block or [0, 0]
            gn, gk = -(-n // rows), -(-k // cols)
            padded = torch.zeros(gn * rows, gk * cols, dtype=w.dtype)
            padded[:n, :k] = w
            view = padded.view(gn, rows, gk, cols)
            lo, hi = view.amin(dim=(1, 3)), view.amax(dim=(1, 3))
        s, _ = utils.calculate_qparams(lo, hi, args)
        module.weight_scale.data.copy_(s.reshape(module.weight_scale.shape))
        given: Any = getattr(module, "input_scale", None)
        if given is not None:
            given.data.fill_(0.02)

    scheme = quantization.QuantizationScheme(targets=["Linear"], weights=args, input_activations=inputs)
    kept = write_with_compressed_tensors(out, model, scheme, "float-quantized", calibrate, ("weight_scale", "input_scale"))
    from transformers import AutoModelForCausalLM

    dense = AutoModelForCausalLM.from_config(model.config, dtype=dtype).eval()  # built as the loader builds it (rotary in float32)
    dense.load_state_dict(kept)
    return dense


CT_CASES = [("tensor", torch.float32, True), ("channel", torch.float32, False), ("block", torch.float32, False),
            ("channel", torch.bfloat16, False), ("block", torch.bfloat16, True)]
CT_IDS = [f"{s}-{str(d).removeprefix('torch.')}-{'static' if i else 'weights'}" for s, d, i in CT_CASES]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, LlamaForCausalLM]]:
    root = tmp_path_factory.mktemp("fp8")
    found = {}
    cases: list[tuple[str, Quantize, dict[str, Any] | None, dict[str, Any] | None]] = [
        ("transformers", transformers_quantizer((32, 32)), FP8_CONFIG, None),
        ("partial-blocks", block_writer((48, 80)), {**FP8_CONFIG, "weight_block_size": [48, 80]}, None),
        ("fbgemm", fbgemm_quantize, {"quant_method": "fbgemm_fp8", "modules_to_not_convert": ["lm_head"]}, None),
        ("modelopt", modelopt_quantize, None, MODELOPT),
    ]
    for name, quantize, config, side in cases:
        found[name] = (root / name, _write(root / name, quantize, config, side=side))
    for (strategy, dtype, static), case in zip(CT_CASES, CT_IDS, strict=True):
        found[f"ct-{case}"] = (root / f"ct-{case}", _ct_write(root / f"ct-{case}", strategy, dtype, static))
    return found


NAMES = ["transformers", "partial-blocks", "fbgemm", "modelopt", *(f"ct-{c}" for c in CT_IDS)]


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(IDS).logits.float()
    return out


def _dtype(name: str) -> str:
    return "bfloat16" if "bfloat16" in name else "float32"


@pytest.mark.parametrize("name", NAMES)
def test_the_layout_declares_what_the_tools_write(written: dict[str, tuple[Path, LlamaForCausalLM]], name: str) -> None:
    """Each checkpoint's config has a layout whose declared tensors are the stored ones, names, shapes and dtypes."""
    out, _ = written[name]
    config = qd.read_config(out).unwrap()
    assert config is not None
    layout = layout_of(config)
    assert isinstance(layout, (Fp8ScaleInv, Fp8Scaled))
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        for prefix, (k, n) in {"model.layers.0.mlp.down_proj.": (256, 128), "model.layers.1.self_attn.k_proj.": (128, 64)}.items():
            stored = {t[len(prefix):]: (tuple(f.get_slice(t).get_shape()), f.get_slice(t).get_dtype()) for t in f.keys() if t.startswith(prefix)}
            declared = layout.tensors(k, n, bias=False)
            assert not isinstance(declared, Unpackable)
            assert {t: s for t, (s, _) in stored.items()} == {t: d.shape for t, d in declared.items()}
            assert stored["weight"][1] == "F8_E4M3"


@pytest.mark.parametrize("name", NAMES)
def test_kept_packed_logits_equal_the_reference_model(written: dict[str, tuple[Path, LlamaForCausalLM]], name: str) -> None:
    """torch-packed keeps every projection's weight in e4m3 bytes, and computes the dense reference's logits."""
    out, dense = written[name]
    loaded = qd.load(out, device="cpu", dtype=_dtype(name), backend="torch-packed").unwrap()
    packed = [m for m in loaded.model.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == PROJECTIONS and all(m.weight.dtype == E4M3 for m in packed)
    assert not any(isinstance(m, torch.nn.Linear) and "layers" in n for n, m in loaded.model.named_modules())
    got, want = _logits(loaded.model), _logits(dense)
    assert torch.allclose(got, want, rtol=0, atol=1e-5 * want.abs().max().item()), (got - want).abs().max()


@pytest.mark.parametrize("name", NAMES)
def test_dequantized_at_load_weights_are_the_references_bit_for_bit(written: dict[str, tuple[Path, LlamaForCausalLM]], name: str) -> None:
    """With ``dequantize_at_load`` every layer's one dense weight equals the tool's dequantized weight exactly."""
    out, dense = written[name]
    loaded = qd.load(out, device="cpu", dtype=_dtype(name), backend="torch-packed", dequantize_at_load=True).unwrap()
    _logits(loaded.model)  # the first forward makes each dense weight
    for module_name, module in loaded.model.named_modules():
        if isinstance(module, PackedLinear):
            reference = dense.get_submodule(module_name)
            assert isinstance(reference, torch.nn.Linear)
            assert module._dense is not None and torch.equal(module._dense, reference.weight.data), module_name


@pytest.mark.skipif(native_fp8() is None, reason="the native FP8 kernel cannot be built here (no C compiler, or not Linux)")
@pytest.mark.parametrize("name", NAMES)
def test_the_native_kernel_takes_the_layers_it_computes_exactly(written: dict[str, tuple[Path, LlamaForCausalLM]], name: str) -> None:
    """cpu-e4m3 is the CPU's first choice: every projection becomes an Fp8Linear on the stored bytes
    (compressed-tensors layers with bfloat16 scales too: the kernel rounds each weight to bfloat16, as
    compressed-tensors does); logits within float32 summation error."""
    out, dense = written[name]
    loaded = qd.load(out, device="cpu", dtype=_dtype(name)).unwrap()
    assert loaded.plan.backend.name == "cpu-e4m3" and "torch-packed" in {r.backend for r in loaded.plan.rejected}
    native = [m for m in loaded.model.modules() if isinstance(m, Fp8Linear)]
    assert len(native) == PROJECTIONS
    assert all(m.round_bf16 == (name.startswith("ct-") and "bfloat16" in name) for m in native)
    assert all(m.weight.dtype == torch.uint8 for m in native)  # the stored bytes, not a float copy
    got, want = _logits(loaded.model), _logits(dense)
    assert torch.allclose(got, want, rtol=0, atol=1e-5 * want.abs().max().item()), (got - want).abs().max()


def test_the_plan_names_the_layout_and_float_activations(written: dict[str, tuple[Path, LlamaForCausalLM]]) -> None:
    out, _ = written["modelopt"]
    explained = qd.load(out, device="cpu", dtype="float32").unwrap().plan.explain()
    assert "layout:   ModelOpt FP8 E4M3 weights kept as stored" in explained
    assert "activations stay in the compute dtype; input_scale read and unused" in explained


# ------------------------------------------------------------------------------ bad checkpoints
def _broken(written: dict[str, tuple[Path, LlamaForCausalLM]], tmp_path: Path, name: str,
            change: Change, config: dict[str, Any] | None = None) -> Path:
    return changed(written[name][0], tmp_path / "broken", change, quantization_config=config)


def _set(name: str, value: Callable[[torch.Tensor], torch.Tensor]) -> Change:
    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors[name] = value(tensors[name]).contiguous()
    return change


def _poke(at: tuple[int, ...], value: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def poked(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t[at] = value
        return t
    return poked


DOWN = "model.layers.1.mlp.down_proj"
BAD = [
    ("transformers", f"{DOWN}.weight_scale_inv", _poke((1, 2), float("nan")), "load.tensor.not_finite"),
    ("transformers", f"{DOWN}.weight_scale_inv", _poke((0, 0), float("inf")), "load.tensor.not_finite"),
    ("transformers", f"{DOWN}.weight_scale_inv", _poke((2, 1), -0.5), "load.tensor.sign"),
    ("fbgemm", f"{DOWN}.weight_scale", _poke((3, 0), -1.0), "load.tensor.sign"),
    ("modelopt", f"{DOWN}.weight_scale", lambda t: -t, "load.tensor.sign"),
    ("ct-channel-float32-weights", f"{DOWN}.weight_scale", _poke((5, 0), float("nan")), "load.tensor.not_finite"),
    ("transformers", f"{DOWN}.weight", _poke((7, 9), float("nan")), "load.tensor.not_finite"),
    ("transformers", f"{DOWN}.weight", lambda t: t.to(torch.float8_e5m2), "load.tensor.dtype"),
    ("transformers", f"{DOWN}.weight", lambda t: t.to(torch.bfloat16), "load.tensor.dtype"),
    ("fbgemm", f"{DOWN}.weight", lambda t: t.view(torch.uint8), "load.tensor.dtype"),
    ("transformers", f"{DOWN}.weight_scale_inv", lambda t: t[:, :-1], "load.tensor.shape"),
    ("fbgemm", f"{DOWN}.weight_scale", lambda t: t.reshape(-1), "load.tensor.shape"),
    ("ct-block-float32-weights", f"{DOWN}.weight_scale", lambda t: t.repeat_interleave(2, 0), "load.tensor.shape"),
]


@pytest.mark.parametrize(("name", "tensor", "value", "code"), BAD, ids=[f"{n}-{t.rpartition('.')[2]}-{c}" for n, t, _, c in BAD])
def test_a_corrupt_checkpoint_is_a_coded_issue(written: dict[str, tuple[Path, LlamaForCausalLM]], tmp_path: Path, name: str, tensor: str,
                                               value: Callable[[torch.Tensor], torch.Tensor], code: str) -> None:
    """NaN, infinite or negative scales, NaN weight bytes, weights in another dtype and scales of
    another shape each stop the load with an issue naming the tensor; nothing raises."""
    out = _broken(written, tmp_path, name, _set(tensor, value))
    result = qd.load(out, device="cpu", dtype="float32")
    assert isinstance(result, Err)
    assert [i.code for i in result.error] == [code] and tensor in result.error[0].message


@pytest.mark.parametrize(("block", "code"), [([64, 64], "load.tensor.shape"), ([16, 32], "load.tensor.shape"),
                                            (None, "load.tensor.shape"), ([32, 0], "fp8.weight_block_size.range")])
def test_a_block_size_that_does_not_match_the_scales_is_a_coded_issue(written: dict[str, tuple[Path, LlamaForCausalLM]], tmp_path: Path,
                                                                      block: list[int] | None, code: str) -> None:
    """The config's block must lay the stored scale grid over the weight: another block (or none, one
    scale per tensor) is refused before a tensor is read, and a block of no size when the config is read."""
    out = _broken(written, tmp_path, "transformers", lambda t: None, {**FP8_CONFIG, "weight_block_size": block})
    result = qd.load(out, device="cpu", dtype="float32")
    assert isinstance(result, Err)
    assert {i.code for i in result.error} == {code}


def test_modelopt_fp8_kv_cache_scales_are_accepted_and_not_read(tmp_path: Path) -> None:
    """ModelOpt FP8 with an FP8 KV cache: k_proj/v_proj also store k_scale/v_scale, which the layout
    declares unused; the cache stays in the compute dtype (a plan note) and the logits are the
    reference's. Without kv_cache_quant_algo the same tensors are unexpected."""
    out = tmp_path / "kv"

    def with_kv(module: str, w: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        stored, dense = modelopt_quantize(module, w)
        if module.endswith(("k_proj", "v_proj")):
            stored[f"{module[-6]}_scale"] = torch.tensor(0.02)
        return stored, dense

    side = {"producer": MODELOPT["producer"], "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8", "exclude_modules": ["lm_head"]}}
    dense = _write(out, with_kv, None, side=side)
    loaded = qd.load(out, device="cpu", dtype="float32", backend="torch-packed").unwrap()
    assert loaded.plan.layout == Fp8Scaled(granularity="tensor", activation_scales=("input_scale",), producer="ModelOpt", kv_cache=True)
    assert any("k_scale/v_scale are not read" in n for n in loaded.plan.notes)
    got, want = _logits(loaded.model), _logits(dense)
    assert torch.allclose(got, want, rtol=0, atol=1e-5 * want.abs().max().item())
    (out / "hf_quant_config.json").write_text(json.dumps(MODELOPT))
    found = qd.load(out, device="cpu", dtype="float32", backend="torch-packed")
    assert isinstance(found, Err) and {i.code for i in found.error} == {"load.tensor.unexpected"}
    assert "k_scale" in found.error[0].message or "v_scale" in found.error[0].message
