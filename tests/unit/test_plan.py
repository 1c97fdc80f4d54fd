"""plan, reconcile and select_backend: GPU decisions with hand-built environments."""

from __future__ import annotations

import attrs
import pytest

import quantdispatch as qd
from quantdispatch.plan import RANKED_BELOW


def _parsed(doc: object, default_method: str | None = None) -> qd.AbstractQuantConfig:
    r = qd.parse(doc, default_method=default_method)
    assert isinstance(r, qd.Ok), r
    return r.value


TORCH = qd.Package("torch", qd.Version.parse("2.13.0+cpu"))
GPTQMODEL = qd.Package("gptqmodel", qd.Version.parse("7.6.0"))
BNB = qd.Package("bitsandbytes", qd.Version.parse("0.50.2"))


def _env(*packages: qd.Package, capability: tuple[int, int] | None = None) -> qd.Environment:
    devices: tuple[qd.AbstractDevice, ...] = (qd.Cpu(),)
    if capability is not None:
        devices += (qd.Cuda(capability=capability, name="test GPU"),)
    return qd.Environment(packages=packages, devices=devices)


def _ok(r: qd.Result[qd.LoadPlan, qd.Issues]) -> qd.LoadPlan:
    assert isinstance(r, qd.Ok), r
    return r.value


@pytest.mark.parametrize("capability,backend", [
    ((7, 0), "torch-packed"), ((7, 5), "torch-packed"), ((8, 0), "gptqmodel-marlin"), ((9, 0), "gptqmodel-marlin"),
])
def test_gptq_marlin_needs_ampere(capability: tuple[int, int], backend: str) -> None:
    """On CUDA, 4-bit symmetric GPTQ goes to Marlin from sm_80 and to the torch kernel below."""
    p = _ok(qd.plan(qd.Gptq(bits=4), _env(TORCH, GPTQMODEL, capability=capability)))
    assert p.backend.name == backend and p.device == qd.Cuda(capability=capability, name="test GPU")
    if capability < (8, 0):
        assert p.rejected[0].backend == "gptqmodel-marlin"
        assert "needs compute capability 8.0+" in p.rejected[0].reasons[0]


def test_marlin_rejects_what_it_cannot_pack() -> None:
    """Config-specific unfitness (3-bit, asymmetric) is a named rejection even on an A100."""
    p = _ok(qd.plan(qd.Gptq(bits=3, sym=False), _env(TORCH, GPTQMODEL, capability=(8, 0))))
    assert p.backend.name == "torch-packed"
    assert p.rejected[0].reasons[:2] == ("Marlin takes 4- or 8-bit weights, not 3-bit", "Marlin takes symmetric GPTQ weights only (sym=false here)")


def test_missing_package_is_a_reason() -> None:
    """Without gptqmodel Marlin is rejected for that reason, and the plan says so."""
    p = _ok(qd.plan(qd.Gptq(bits=4), _env(TORCH, capability=(8, 0))))
    assert p.backend.name == "torch-packed"
    assert "needs gptqmodel>=1.4.3, which is not installed" in p.rejected[0].reasons
    assert "rejected: gptqmodel-marlin" in p.explain()


def test_bnb_8bit_needs_turing_but_4bit_does_not() -> None:
    """LLM.int8 needs sm_75; NF4 runs on sm_70."""
    env = _env(TORCH, BNB, capability=(7, 0))
    assert _ok(qd.plan(qd.Bnb4Bit(quant_type="nf4"), env)).backend.name == "bitsandbytes-4bit"
    r = qd.plan(qd.Bnb8Bit(), env)
    assert isinstance(r, qd.Err) and r.error[0].code == "plan.no_usable_backend"
    assert "compute capability 7.5+" in r.error[0].message
    assert _ok(qd.plan(qd.Bnb8Bit(), env, qd.LoadOptions(device="cpu"))).backend.name == "bitsandbytes-8bit"


def test_old_bitsandbytes_is_rejected() -> None:
    """A version below the backend's minimum is a reason, quoting the version found."""
    r = qd.plan(qd.Bnb4Bit(), _env(TORCH, qd.Package("bitsandbytes", qd.Version.parse("0.41.0"))))
    assert isinstance(r, qd.Err) and "needs bitsandbytes>=0.46.1, found 0.41.0" in r.error[0].message


def test_marlin_awq_has_no_cpu_kernel() -> None:
    """Marlin-packed AWQ on a CPU is a typed refusal, not an exception."""
    r = qd.plan(qd.AwqMarlin(), _env(TORCH))
    assert isinstance(r, qd.Err) and r.error[0].code == "awq.marlin.needs_cuda"
    assert _ok(qd.plan(qd.AwqMarlin(), _env(TORCH, GPTQMODEL, capability=(8, 6)))).backend.name == "gptqmodel-awq-marlin"


def test_dtype_is_settled_and_requested_dtypes_are_checked() -> None:
    """bnb 4-bit computes in its compute dtype; AWQ's CUDA kernel refuses bfloat16, so the plan falls back."""
    assert _ok(qd.plan(qd.Bnb4Bit(compute_dtype=qd.DType.BFLOAT16), _env(TORCH, BNB))).dtype is qd.DType.BFLOAT16
    p = _ok(qd.plan(qd.AwqGemv(), _env(TORCH, GPTQMODEL, capability=(7, 5)), qd.LoadOptions(dtype=qd.DType.BFLOAT16)))
    assert p.backend.name == "torch-packed" and p.dtype is qd.DType.BFLOAT16
    assert any("does not compute in bfloat16" in r for x in p.rejected for r in x.reasons)


def test_device_requests() -> None:
    """auto prefers a GPU; asking for a missing device is an issue; cpu is always there."""
    env = _env(TORCH)
    assert _ok(qd.plan(qd.Gptq(bits=4), env)).device == qd.Cpu()
    r = qd.plan(qd.Gptq(bits=4), env, qd.LoadOptions(device="cuda:1"))
    assert isinstance(r, qd.Err) and r.error[0].code == "plan.device.unavailable"
    r2 = qd.plan(qd.Gptq(bits=4), env, qd.LoadOptions(device="tpu"))
    assert isinstance(r2, qd.Err) and r2.error[0].code == "plan.device.unknown"


def test_forced_backend() -> None:
    """LoadOptions(backend=...) forces a backend; the others are reported as not requested."""
    p = _ok(qd.plan(qd.Gptq(bits=4), _env(TORCH, GPTQMODEL, capability=(8, 0)), qd.LoadOptions(backend="torch-packed")))
    assert p.backend.name == "torch-packed" and p.rejected[0].reasons == ("not requested (backend='torch-packed')",)


def test_reconcile_checkpoint_wins_and_loading_attributes_apply() -> None:
    """A user GPTQ config on a GPTQ checkpoint: only backend/max_input_length apply, the rest is named."""
    ckpt = _parsed({"quant_method": "gptq", "bits": 4})
    user = _parsed({"quant_method": "gptq", "bits": 8, "backend": "marlin", "max_input_length": 4096})
    r = qd.reconcile(ckpt, user)
    assert isinstance(r, qd.Ok)
    assert r.value.overrides == (("backend", "marlin"), ("max_input_length", 4096))
    assert isinstance(ckpt, qd.Gptq) and r.value.config == attrs.evolve(ckpt, backend="marlin", max_input_length=4096)
    assert "bits" in r.value.notes[0]


def test_reconcile_another_method_is_an_error() -> None:
    """A user config of another method than the checkpoint's is refused, naming both."""
    r = qd.reconcile(qd.Gptq(bits=4), qd.Bnb4Bit())
    assert isinstance(r, qd.Err) and r.error[0].code == "reconcile.method.mismatch"


def test_reconcile_bnb_variant_is_ignored_with_a_note() -> None:
    """bitsandbytes has no loading attributes: a user 8-bit config on a 4-bit checkpoint is named and ignored."""
    r = qd.reconcile(qd.Bnb4Bit(), qd.Bnb8Bit())
    assert isinstance(r, qd.Ok) and r.value.config == qd.Bnb4Bit() and r.value.overrides == ()
    assert any("ignored" in n for n in r.value.notes)


def test_quantize_while_loading() -> None:
    """No checkpoint config: bnb quantizes while loading; GPTQ/AWQ need calibration and are refused."""
    env = _env(TORCH, BNB)
    p = _ok(qd.plan(None, env, qd.LoadOptions(user_config=qd.Bnb4Bit(quant_type="nf4"))))
    assert not p.pre_quantized
    r = qd.plan(None, env, qd.LoadOptions(user_config=qd.AwqGemm()))
    assert isinstance(r, qd.Err) and r.error[0].code == "plan.awq.needs_calibration"
    r2 = qd.plan(None, env)
    assert isinstance(r2, qd.Err) and r2.error[0].code == "plan.no_config"


def test_gguf_types_without_a_kernel_are_rejected() -> None:
    """A GGUF with a tensor type the torch backend cannot dequantize gets no plan, naming the type."""
    cfg = qd.Gguf(tensors=(qd.GgufTensor("a", qd.GgmlType.Q4_K, (256,)), qd.GgufTensor("b", qd.GgmlType.Q8_K, (256,))))
    r = qd.plan(cfg, _env(TORCH))
    assert isinstance(r, qd.Err) and "of type Q8_K" in r.error[0].message and "cannot dequantize tensor" in r.error[0].message


def test_explain_mentions_every_decision() -> None:
    """explain() states config, device, dtype, backend, rejections and skips."""
    text = _ok(qd.plan(qd.AwqGemm(modules_to_not_convert=("visual",)), _env(TORCH, capability=(7, 0)))).explain()
    for part in ("AwqGemm", "cuda:0", "float16", "torch-packed", "rejected: gptqmodel-awq-marlin", "skipped:  visual"):
        assert part in text


AVX2 = qd.Cpu(features=qd.CpuFeatures(avx2=True))
ZEN4 = qd.Cpu(features=qd.CpuFeatures(avx2=True, avx512=True, avx512_bf16=True))


def _cpu_env(cpu: qd.Cpu) -> qd.Environment:
    return qd.Environment(packages=(TORCH,), devices=(cpu,))


@pytest.mark.parametrize("config", [qd.Gptq(bits=4), qd.GptqV2(bits=4, group_size=-1, desc_act=True, sym=False),
                                    qd.Gptq(bits=4, group_size=512), qd.AwqGemm(), qd.AwqGemv(group_size=64), qd.AwqGemvFast()])
def test_cpu_int4_is_chosen_from_the_environments_cpu(config: qd.AbstractQuantConfig) -> None:
    """4-bit GPTQ/AWQ on a CPU with AVX2 or AVX-512 goes to the int4 kernel, the portable one as fallback."""
    p = _ok(qd.plan(config, _cpu_env(AVX2), qd.LoadOptions(device="cpu", executable=True)))
    assert p.backend.name == "cpu-int4" and p.device == AVX2
    fallbacks = [r.backend for r in p.rejected if r.reasons == (RANKED_BELOW,)]
    assert "torch-packed" in fallbacks and "fallback:" in p.explain()


@pytest.mark.parametrize(("config", "reason"), [
    (qd.Gptq(bits=3), "takes 4-bit weights, not 3-bit"),
    (qd.Gptq(bits=4, group_size=16), "not 16"),
    (qd.Gptq(bits=4, group_size=48), "not 48"),
    (qd.AwqGemv(group_size=16), "not 16"),
])
def test_cpu_int4_unfit_configs_fall_back_with_the_reason(config: qd.AbstractQuantConfig, reason: str) -> None:
    """Widths and group sizes the kernel cannot take are named in the plan; the portable kernel loads them."""
    p = _ok(qd.plan(config, _cpu_env(ZEN4), qd.LoadOptions(executable=True)))
    assert p.backend.name in ("torch-packed", "torch-packed")
    assert any(reason in r for r in p.rejected[0].reasons), p.rejected


def test_the_native_int4_kernels_rank_first_wherever_they_fit() -> None:
    """AVX2+FMA with or without native bf16: the int8-activation kernel first, the float32 native
    kernel then torch's int4 kernel as its fallbacks (named so); without FMA neither native kernel
    fits and torch's kernel is chosen."""
    avx2_fma = qd.Cpu(features=qd.CpuFeatures(avx2=True, fma=True))
    zen4 = qd.Cpu(features=qd.CpuFeatures(avx2=True, fma=True, avx512=True, avx512_bf16=True))
    for config in (qd.Gptq(bits=4), qd.AwqGemm()):
        p = _ok(qd.plan(config, _cpu_env(avx2_fma), qd.LoadOptions(executable=True)))
        assert p.backend.name == "cpu-q4-q8dot" and p.rejected[:2] == tuple(qd.Rejection(b, (RANKED_BELOW,)) for b in ("cpu-q4", "cpu-int4"))
        q = _ok(qd.plan(config, _cpu_env(zen4), qd.LoadOptions(executable=True)))
        assert q.backend.name == "cpu-q4-q8dot" and q.rejected[:2] == tuple(qd.Rejection(b, (RANKED_BELOW,)) for b in ("cpu-q4", "cpu-int4"))
    no_fma = _ok(qd.plan(qd.Gptq(bits=4), _cpu_env(AVX2), qd.LoadOptions(executable=True)))
    assert no_fma.backend.name == "cpu-int4"
    assert {x.backend for x in no_fma.rejected if any("AVX2 and FMA" in r for r in x.reasons)} == {"cpu-q4-q8dot", "cpu-q4"}


def test_cpu_without_simd_features_keeps_the_portable_kernel() -> None:
    """A CPU that reports neither AVX2 nor AVX-512 (or a hand-built Cpu()) is not given the int4 kernel."""
    p = _ok(qd.plan(qd.Gptq(bits=4), _cpu_env(qd.Cpu()), qd.LoadOptions(executable=True)))
    reasons = {x.backend: x.reasons for x in p.rejected}
    assert p.backend.name == "torch-packed" and "AVX2/AVX-512" in reasons["cpu-int4"][0] and "AVX2 and FMA" in reasons["cpu-q4"][0]
    assert "AVX2 and FMA" in reasons["cpu-q4-q8dot"][0]


def test_compute_dtype_follows_the_cpus_bf16_support() -> None:
    """bfloat16 where the CPU has it natively (the reason says so), float32 elsewhere; float32 can be forced."""
    native = _ok(qd.plan(qd.Gptq(bits=4), _cpu_env(ZEN4)))
    assert native.dtype is qd.DType.BFLOAT16 and any("natively" in n for n in native.notes)
    assert "slower there" not in native.explain()
    emulated = _ok(qd.plan(qd.Gptq(bits=4), _cpu_env(AVX2)))
    assert emulated.dtype is qd.DType.FLOAT32 and any("no native bfloat16" in n for n in emulated.notes)
    forced = _ok(qd.plan(qd.Gptq(bits=4), _cpu_env(ZEN4), qd.LoadOptions(dtype=qd.DType.FLOAT32, executable=True)))
    assert forced.dtype is qd.DType.FLOAT32 and forced.backend.name == "cpu-int4"
    three = _ok(qd.plan(qd.Gptq(bits=3), _cpu_env(ZEN4)))
    assert three.dtype is qd.DType.FLOAT32  # no fast kernel for 3-bit: bf16 would only cost precision


def test_eight_bit_gptq_on_the_cpu_is_kept_dense() -> None:
    """8-bit GPTQ goes to the dense backend (exact group scales, one rounding), not to int4."""
    p = _ok(qd.plan(qd.Gptq(bits=8), _cpu_env(ZEN4), qd.LoadOptions(executable=True)))
    assert p.backend.name == "cpu-dense" and p.dtype is qd.DType.BFLOAT16
    assert "not 8-bit" in p.rejected[0].reasons[0]


def test_awq_marlin_is_still_refused_on_the_cpu() -> None:
    """The CPU rule for AWQ does not shadow the Marlin refusal."""
    r = qd.plan(qd.AwqMarlin(), _cpu_env(ZEN4))
    assert isinstance(r, qd.Err) and r.error[0].code == "awq.marlin.needs_cuda"


def test_gguf_plan_says_which_tensors_run_the_fused_kernels() -> None:
    """Before a byte of tensor data is read, the plan says, by block type, which tensors the chosen
    kept-packed backend runs on its fused kernels and which it dequantizes per call; on a CPU
    without AVX2 and FMA the plain packed backend is chosen and says every linear dequantizes."""
    tensors = (qd.GgufTensor("blk.0.attn_q.weight", qd.GgmlType.Q4_K, (256, 256)),
               qd.GgufTensor("blk.0.ffn_down.weight", qd.GgmlType.Q6_K, (256, 256)),
               qd.GgufTensor("blk.1.attn_q.weight", qd.GgmlType.Q4_K, (256, 256)),
               qd.GgufTensor("token_embd.weight", qd.GgmlType.F16, (256, 64)),
               qd.GgufTensor("blk.0.attn_norm.weight", qd.GgmlType.F32, (256,)))
    fast = qd.Cpu(features=qd.CpuFeatures(avx2=True, fma=True))
    p = _ok(qd.plan(qd.Gguf(tensors=tensors), qd.Environment(packages=(TORCH,), devices=(fast,))))
    assert p.backend.name == "cpu-gguf-q8dot"
    assert any(n.startswith("fused kernels at decode (up to 8 rows) for Q4_K (2), Q6_K (1), activations quantized to 8 bits "
                            "per block of 32 as llama.cpp does") for n in p.notes)
    matvec = _ok(qd.plan(qd.Gguf(tensors=tensors), qd.Environment(packages=(TORCH,), devices=(fast,)),
                         qd.LoadOptions(backend="cpu-gguf-matvec")))
    assert "fused kernels at decode (up to 8 rows) for Q4_K (2), Q6_K (1); prefill dequantizes per call" in matvec.notes
    assert "dequantized per call: F16 (1)" in p.notes
    plain = _ok(qd.plan(qd.Gguf(tensors=tensors), _env(TORCH)))
    assert plain.backend.name == "torch-gguf-packed"
    assert "kept packed (tensors by type): F16 (1), Q4_K (2), Q6_K (1); each linear dequantizes per call" in plain.notes
    dense = _ok(qd.plan(qd.Gguf(tensors=tensors, dequantize=True), _env(TORCH)))
    assert dense.backend.name == "torch-gguf" and not any("per call" in n for n in dense.notes)


def test_a_forced_backend_name_is_quoted_and_bounded_in_every_reason() -> None:
    """A megabyte-long or escape-laden backend name appears in the rejected reasons bounded and escaped."""
    env = qd.Environment(packages=(qd.Package("torch", qd.Version.parse("2.13.0")),))
    found = qd.plan(qd.Gptq(bits=4, group_size=128), env, qd.LoadOptions(device="cpu", backend="\x1b[2J" + "x" * 10**6))
    text = found.error[0].message if isinstance(found, qd.Err) else found.value.explain()
    assert "\x1b" not in text and len(text) < 20_000
