"""Differential: our GPTQ/AWQ layouts against GPTQModel 7.6.0, bit for bit (skipped without it).

Two levels:

- **Layer**: our RTN writer's tensors are loaded into GPTQModel's own ``TorchLinear`` (with its
  v1 -> v2 zero-point conversion) and dequantized by its ``dequantize_weight``; and GPTQModel's
  packers (``TorchLinear.pack_block`` + ``convert_gptq_v2_to_v1_format_module``,
  ``AwqTorchLinear.pack``, ``AwqGEMVLinear.pack``, ``AwqGEMVFastLinear.pack``) pack the same
  codes, scales and zero points, and must produce our tensors exactly. GPTQModel's GEMV and
  GEMV_FAST ``pack`` methods are line-for-line ports of AutoAWQ 0.2.9's ``WQLinear_GEMV.from_linear``
  and ``WQLinear_GEMVFast.from_linear`` (``awq/modules/linear/gemv.py``, ``gemv_fast.py``, read
  and compared for this test): that is how our GEMV/GEMV_FAST packers are checked against
  AutoAWQ's published packing code without installing AutoAWQ (deprecated, ~1 GB of triton).
  Neither tool dequantizes GEMV/GEMV_FAST on a CPU (CUDA kernels only); our dequantization of
  those follows the kernels' formula and is checked for self-consistency only.
- **Model**: tiny random Llama, Qwen2 and Phi-3 models are quantized by GPTQModel during the run
  (GPTQ 2/3/4/8-bit, act-order, asym, v1 and v2; AWQ GEMM), saved, and loaded back by GPTQModel;
  for every quantized layer, our dequantization of the saved tensors (config parsed by our codec)
  equals GPTQModel's dequantization of its loaded module, bit for bit in fp16.

GPTQModel's C++ pack extension is disabled (``GPTQMODEL_DISABLE_PACK_EXT=1``): it is JIT-compiled
on first use (~50 s here) and its pure-torch fallback is the same layout (checked above).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final

import pytest
import torch

os.environ.setdefault("GPTQMODEL_DISABLE_PACK_EXT", "1")
gptqmodel = pytest.importorskip("gptqmodel")

from quantdispatch.codec import parse  # noqa: E402
from quantdispatch.configs import AbstractAwq, AbstractGptq, AwqGemm, AwqGemv, AwqGemvFast, Gptq, GptqV2  # noqa: E402
from quantdispatch.configs.gptq import GPTQ_BITS  # noqa: E402
from quantdispatch.kernels.awq import awq_expected_tensors, dequantize_awq_gemm  # noqa: E402
from quantdispatch.kernels.gptq import dequantize_gptq, gptq_expected_tensors, gptq_v1_zeros, gptq_v2_qzeros  # noqa: E402
from quantdispatch.kernels.modules import AwqLinear, GptqLinear  # noqa: E402
from quantdispatch.result import Ok  # noqa: E402
from quantdispatch.testing import Quantized, quantize_awq, quantize_gptq  # noqa: E402

torch.set_num_threads(1)

IN: Final = 256
OUT: Final = 64


def _weight(seed: int, kind: str) -> torch.Tensor:
    w = torch.randn(OUT, IN, generator=torch.Generator().manual_seed(seed)) * 0.05
    return w.abs() if kind == "positive" else w


def _linear(weight: torch.Tensor) -> torch.nn.Linear:
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    linear.weight.data = weight.clone()
    return linear


def _torch_linear(config: AbstractGptq) -> Any:
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear
    return TorchLinear(bits=config.bits, group_size=config.group_size, sym=config.sym, desc_act=config.desc_act,
                       in_features=IN, out_features=OUT, bias=False, pack_dtype=torch.int32, register_buffers=True)


GPTQ_LAYERS: Final = [
    cls(bits=bits, group_size=group_size, sym=sym, desc_act=desc_act)
    for cls in (Gptq, GptqV2) for bits in GPTQ_BITS
    for group_size, sym, desc_act in ((32, False, True), (128, True, False), (-1, False, False))
]


def _gptq_id(config: AbstractGptq) -> str:
    return f"{config.checkpoint_format}-{config.bits}b-g{config.group_size}-{'sym' if config.sym else 'asym'}{'-act' if config.desc_act else ''}"


def _quantized(config: AbstractGptq, kind: str) -> Quantized:
    perm = torch.randperm(IN, generator=torch.Generator().manual_seed(7)) if config.desc_act else None
    return quantize_gptq(_weight(11, kind), config, perm=perm)


@pytest.mark.parametrize("kind", ["normal", "positive"])
@pytest.mark.parametrize("config", GPTQ_LAYERS, ids=_gptq_id)
def test_gptq_dequantize_equals_gptqmodel(config: AbstractGptq, kind: str) -> None:
    """Our dequantization equals GPTQModel's TorchLinear.dequantize_weight (after its v1 -> v2 load conversion), in fp16.

    ``positive`` weights make every asymmetric zero point 0, which v1 stores as -1: the case where
    GPTQModel's whole-word offset carries into the neighbouring field.
    """
    from gptqmodel.utils.model import convert_gptq_v1_to_v2_format_module
    q = _quantized(config, kind)
    layer = _torch_linear(config)
    for name in ("qweight", "qzeros", "scales", "g_idx"):
        getattr(layer, name).copy_(q.tensors[name])
    if gptq_v1_zeros(config):
        convert_gptq_v1_to_v2_format_module(layer, bits=config.bits, pack_dtype=torch.int32)
    theirs = layer.dequantize_weight()
    assert theirs.dtype == torch.float16
    t = q.tensors
    ours = dequantize_gptq(t["qweight"], t["qzeros"], t["scales"], t["g_idx"], bits=config.bits, v1=gptq_v1_zeros(config),
                           group_size=config.group_size, dtype=torch.float16)
    assert torch.equal(ours, theirs.t())


@pytest.mark.parametrize("kind", ["normal", "positive"])
@pytest.mark.parametrize("config", [c for c in GPTQ_LAYERS if gptq_v1_zeros(c)], ids=_gptq_id)
def test_v2_qzeros_equal_gptqmodels_conversion(config: AbstractGptq, kind: str) -> None:
    """gptq_v2_qzeros writes, word for word, what GPTQModel's loader converts v1 qzeros to (carries included)."""
    from gptqmodel.utils.model import convert_gptq_v1_to_v2_format_module
    q = _quantized(config, kind)
    layer = _torch_linear(config)
    layer.qzeros.copy_(q.tensors["qzeros"])
    convert_gptq_v1_to_v2_format_module(layer, bits=config.bits, pack_dtype=torch.int32)
    assert torch.equal(gptq_v2_qzeros(q.tensors["qzeros"], config.bits), layer.qzeros)


@pytest.mark.parametrize("kind", ["normal", "positive"])
@pytest.mark.parametrize("config", GPTQ_LAYERS, ids=_gptq_id)
def test_gptq_writer_equals_gptqmodel_pack(config: AbstractGptq, kind: str) -> None:
    """GPTQModel's pack_block (and its v2 -> v1 conversion for ``gptq``) writes exactly our writer's tensors."""
    from gptqmodel.utils.model import convert_gptq_v2_to_v1_format_module
    q = _quantized(config, kind)
    layer = _torch_linear(config)
    layer.pack_block(_linear(q.weight), q.scales.to(torch.float32), q.zeros.to(torch.float32), q.group_of.to(torch.int32))
    if gptq_v1_zeros(config):
        # It reads bits and pack_dtype from the layer; a QuantizeConfig would leave a temp dir finalizer behind.
        convert_gptq_v2_to_v1_format_module(layer, SimpleNamespace(bits=config.bits, pack_dtype=torch.int32))
    for name in ("qweight", "qzeros", "scales", "g_idx"):
        assert torch.equal(getattr(layer, name).to(q.tensors[name].dtype), q.tensors[name]), name


AWQ_LAYERS: Final = [
    layout(group_size=group_size, zero_point=zero_point)
    # GPTQModel's GEMV constructor accepts group sizes 64 and 128 only (its kernel's), AutoAWQ's also 32.
    for layout, group_sizes in ((AwqGemm, (32, 128)), (AwqGemv, (64, 128)), (AwqGemvFast, (32, 128)))
    for group_size in group_sizes for zero_point in (True, False)
]


def _gptqmodel_awq_layer(config: AbstractAwq) -> Any:
    from gptqmodel.nn_modules.qlinear.gemv_awq import AwqGEMVLinear
    from gptqmodel.nn_modules.qlinear.gemv_fast_awq import AwqGEMVFastLinear
    from gptqmodel.nn_modules.qlinear.torch_awq import AwqTorchLinear
    cls = {AwqGemm: AwqTorchLinear, AwqGemv: AwqGEMVLinear, AwqGemvFast: AwqGEMVFastLinear}[type(config)]
    return cls(bits=4, group_size=config.group_size, sym=not config.zero_point, desc_act=False, in_features=IN,
               out_features=OUT, bias=False)


@pytest.mark.parametrize("config", AWQ_LAYERS, ids=lambda c: f"{c.version}-g{c.group_size}-{'zp' if c.zero_point else 'sym'}")
def test_awq_writer_equals_gptqmodel_pack(config: AbstractAwq) -> None:
    """GPTQModel's AWQ packers (GEMM; GEMV and GEMV_FAST as ported from AutoAWQ 0.2.9) write exactly our tensors."""
    q = quantize_awq(_weight(5, "normal"), config)
    layer = _gptqmodel_awq_layer(config)
    layer.pack(_linear(q.weight), q.scales.to(torch.float32), q.zeros.to(torch.float32))
    for name in ("qweight", "qzeros", "scales"):
        assert torch.equal(getattr(layer, name), q.tensors[name]), name
    if isinstance(config, AwqGemm):
        from gptqmodel.quantization.awq.utils.packing_utils import dequantize_gemm
        theirs = dequantize_gemm(q.tensors["qweight"], q.tensors["qzeros"], q.tensors["scales"], 4, config.group_size)
        ours = dequantize_awq_gemm(q.tensors["qweight"], q.tensors["qzeros"], q.tensors["scales"], dtype=torch.float16)
        assert torch.equal(ours, theirs.t())


# --- whole models quantized by GPTQModel during the run ----------------------------------------

CALIBRATION: Final = [f"sample {i}: the quick brown fox jumps over the lazy dog while {i} cats watch" for i in range(12)]


def _tiny_model(arch: str, directory: Path) -> Path:
    """A random 1-layer model with a trained byte-level tokenizer, saved; no downloads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CALIBRATION, trainers.BpeTrainer(vocab_size=256, special_tokens=["<unk>", "<s>"],
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="<s>", pad_token="<unk>")
    fast.save_pretrained(directory)
    shape: dict[str, Any] = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                 vocab_size=256, max_position_embeddings=128)
    torch.manual_seed(0)
    model: torch.nn.Module
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**shape))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**shape))
    else:
        model = Phi3ForCausalLM(Phi3Config(**shape, pad_token_id=0))
    model.save_pretrained(directory)
    return directory


MODEL_CASES: Final = {
    "llama-gptq-4b-g32-act-asym": ("llama", dict(bits=4, group_size=32, desc_act=True, sym=False, format="gptq")),
    "qwen2-gptq_v2-3b-g32-asym": ("qwen2", dict(bits=3, group_size=32, desc_act=False, sym=False, format="gptq_v2")),
    "phi3-gptq-2b-g64-act-asym": ("phi3", dict(bits=2, group_size=64, desc_act=True, sym=False, format="gptq")),
    # act_group_aware (GPTQModel's default) refuses group_size -1.
    "llama-gptq-8b-gall-sym": ("llama", dict(bits=8, group_size=-1, desc_act=False, sym=True, format="gptq", act_group_aware=False)),
    "qwen2-awq-gemm-g32": ("qwen2", dict(bits=4, group_size=32, quant_method="awq", format="gemm")),
}


@pytest.fixture(scope="module", params=sorted(MODEL_CASES))
def quantized_checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A tiny model quantized and saved by GPTQModel, once per case for the whole module."""
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig
    name: str = request.param
    arch, options = MODEL_CASES[name]
    base = _tiny_model(arch, tmp_path_factory.mktemp(f"{arch}-base"))
    out = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("cwd"))  # GPTQModel writes its quantization logs to ./logs
        # offload_to_disk would leave a TemporaryDirectory for the garbage collector (a ResourceWarning).
        model = GPTQModel.load(str(base), QuantizeConfig(**options, offload_to_disk=False), device="cpu")
        # AUTO picks the CUDA AWQ GEMM kernel for AWQ even on a CPU; the torch one packs the same format.
        awq = options.get("quant_method") == "awq"
        model.quantize(CALIBRATION, batch_size=1, backend=BACKEND.AWQ_TORCH if awq else BACKEND.AUTO)
        model.save(str(out))
    del model
    yield name, out


def _read_config(directory: Path) -> AbstractGptq | AbstractAwq:
    raw = json.loads((directory / "config.json").read_text())["quantization_config"]
    parsed = parse(raw)
    assert isinstance(parsed, Ok), parsed
    config = parsed.value
    assert isinstance(config, (AbstractGptq, AbstractAwq))
    return config


def test_checkpoint_dequantizes_like_gptqmodel(quantized_checkpoint: tuple[str, Path]) -> None:
    """Every quantized layer of a GPTQModel checkpoint: our dequantization of its tensors equals GPTQModel's of its loaded module."""
    from gptqmodel import BACKEND, GPTQModel
    from safetensors.torch import load_file

    name, directory = quantized_checkpoint
    config = _read_config(directory)
    tensors = load_file(str(directory / "model.safetensors"))
    is_awq = isinstance(config, AbstractAwq)
    loaded = GPTQModel.load(str(directory), device="cpu", backend=BACKEND.AWQ_TORCH if is_awq else BACKEND.TORCH,
                            dtype=torch.float16)
    compared = []
    for module_name, module in loaded.model.named_modules():
        if not hasattr(module, "qweight"):
            continue
        t = {suffix: tensors[f"{module_name}.{suffix}"] for suffix in ("qweight", "qzeros", "scales", "g_idx")
             if f"{module_name}.{suffix}" in tensors}
        assert module.scales.dtype == torch.float16, module.scales.dtype
        if isinstance(config, AbstractAwq):
            from gptqmodel.quantization.awq.utils.packing_utils import dequantize_gemm
            theirs = dequantize_gemm(module.qweight, module.qzeros, module.scales, 4, module.group_size).t()
            ours = dequantize_awq_gemm(t["qweight"], t["qzeros"], t["scales"], dtype=torch.float16)
        else:
            # The class's eager method: the loader wraps the instance's in torch.compile (seconds of inductor per layer).
            theirs = type(module).dequantize_weight(module).t()
            ours = dequantize_gptq(t["qweight"], t["qzeros"], t["scales"], t["g_idx"], bits=config.bits,
                                   v1=gptq_v1_zeros(config), group_size=config.group_size, dtype=torch.float16)
        assert torch.equal(ours, theirs), module_name
        # The portable module, built on meta from our config and loaded with the checkpoint's names, agrees too.
        prefix = f"{module_name}."
        state = {key.removeprefix(prefix): value for key, value in tensors.items() if key.startswith(prefix)}
        ours_module: GptqLinear | AwqLinear
        if isinstance(config, AbstractAwq):
            ours_module = AwqLinear(config, module.in_features, module.out_features, "bias" in state, device="meta")
        else:
            ours_module = GptqLinear(config, module.in_features, module.out_features, "bias" in state, device="meta")
        ours_module.load_state_dict(state, assign=True)
        assert torch.equal(ours_module.dequantize(torch.float16), theirs), module_name
        compared.append(module_name)
    assert len(compared) >= 5, compared


def test_checkpoint_tensors_are_the_expected_ones(quantized_checkpoint: tuple[str, Path]) -> None:
    """Every quantized layer GPTQModel saved holds exactly the tensors, shapes and dtypes ``*_expected_tensors`` names."""
    from safetensors import safe_open

    name, directory = quantized_checkpoint
    config = _read_config(directory)
    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        stored = {key: (tuple(f.get_slice(key).get_shape()), f.get_slice(key).get_dtype()) for key in f.keys()}
    layers = sorted(key.removesuffix(".qweight") for key in stored if key.endswith(".qweight"))
    assert layers
    for layer in layers:
        found = {key.removeprefix(layer + "."): spec for key, spec in stored.items()
                 if key.startswith(layer + ".") and key.count(".") == layer.count(".") + 1}
        scales_shape = found["scales"][0]
        out_features = scales_shape[1]
        in_features = found["g_idx"][0][0] if "g_idx" in found else found["qweight"][0][0]
        if isinstance(config, AbstractGptq):
            expected = gptq_expected_tensors(config, in_features, out_features, "bias" in found)
        else:
            expected = awq_expected_tensors(config, in_features, out_features, "bias" in found)
        assert found.keys() == expected.keys(), layer
        for suffix, spec in expected.items():
            shape, dtype = found[suffix]
            assert shape == spec.shape and spec.accepts(_SAFETENSORS_DTYPE[dtype]), (layer, suffix, found[suffix], spec)
            if isinstance(config, AbstractAwq) and suffix in ("scales", "bias"):
                assert dtype == "BF16"  # GPTQModel keeps the model's dtype (bf16 on a CPU) for AWQ scales and biases
            else:
                assert _SAFETENSORS_DTYPE[dtype] == spec.dtype, (layer, suffix)
    if name.startswith("phi3"):
        # GPTQModel (through Defuser) splits Phi-3's fused gate_up_proj into gate_proj and up_proj and saves them
        # split; qkv_proj stays fused. A loader must map the split names back onto Phi-3's module.
        assert {"model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "model.layers.0.self_attn.qkv_proj"} <= set(layers)
        assert not any("gate_up_proj" in key for key in stored)


_SAFETENSORS_DTYPE: Final = {"I32": torch.int32, "I16": torch.int16, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
