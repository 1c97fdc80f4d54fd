"""The native NVFP4 kernel: its op under ``opcheck``, its sums against a float64 product of the
reference weights, and NVFP4 checkpoints loaded on it.

The reference weights are ModelOpt's published dequantization (``nvfp4_ckpt.modelopt_reference``)
and compressed-tensors' unpacker, never the kernel's own code. The fused loop sums in float32 in its
own order, so products are held to float32 rounding of the float64 ones; the prefill path's
weights are exact, so it matches a float32 GEMM of the reference weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import quantdispatch as qd
from quantdispatch.kernels.fp4_native import FUSED_ROWS, NVFP4_MATMUL, Fp4Linear, native_fp4
from quantdispatch.kernels.modules import PackedLinear
from tests.loading.nvfp4_ckpt import modelopt_reference, write_modelopt

torch.set_num_threads(1)
needs_fp4 = pytest.mark.skipif(native_fp4() is None, reason="the native FP4 kernel cannot be built here (no C compiler?)")


Args = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, bool]


def _args(m: int, n: int, k: int, dtype: torch.dtype, seed: int, divide: bool = False) -> tuple[Args, torch.Tensor]:
    """The op's arguments (x, packed codes, E4M3 block scales as bytes, the tensor scale, divide) and
    the reference weight: ModelOpt's formula (``scale * scale_2``), or compressed-tensors'
    (``scale / global_scale``) with ``divide``."""
    g = torch.Generator().manual_seed(seed)
    packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=g)
    scale8 = (torch.rand(n, k // 16, generator=g) * 0.05).to(torch.float8_e4m3fn)
    tensor_scale = torch.tensor([3.7 if divide else 0.37])
    per_block = scale8.to(torch.float32) / tensor_scale if divide else scale8.to(torch.float32) * tensor_scale
    weight = modelopt_reference({"weight": packed, "weight_scale": per_block, "weight_scale_2": torch.tensor(1.0)})
    x = torch.randn(m, k, generator=g).to(dtype)
    return (x, packed, scale8.view(torch.uint8), tensor_scale, divide), weight


@needs_fp4
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("divide", [False, True], ids=["times-tensor-scale", "over-global-scale"])
@pytest.mark.parametrize(("m", "n", "k"), [(1, 16, 64), (3, 40, 128), (FUSED_ROWS, 24, 256), (12, 40, 128)])
def test_opcheck_and_values(m: int, n: int, k: int, dtype: torch.dtype, divide: bool) -> None:
    """Decode (up to 8 rows, the fused loop) and prefill (12 rows, dequantized blocks + GEMM): the op
    passes opcheck, and its float32 result is the product with the reference weights, whose block
    scales are the E4M3 bytes times (ModelOpt) or over (compressed-tensors) the tensor scale."""
    args, weight = _args(m, n, k, dtype, seed=m * k + n, divide=divide)
    x = args[0]
    torch.library.opcheck(NVFP4_MATMUL, args)
    expected = x.double() @ weight.double().T
    got = NVFP4_MATMUL(*args)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    if m > FUSED_ROWS:
        assert torch.equal(got, x.float() @ weight.T)


@needs_fp4
def test_the_op_refuses_what_it_would_read_out_of_bounds() -> None:
    """Sizes or dtypes that disagree are a ValueError, never an out-of-bounds read."""
    (x, packed, scale, tensor_scale, _), _ = _args(2, 16, 64, torch.float32, seed=1)
    with pytest.raises(ValueError, match="nvfp4_matmul needs"):
        NVFP4_MATMUL(x, packed[:, :-1], scale, tensor_scale, False)
    with pytest.raises(ValueError, match="nvfp4_matmul needs"):
        NVFP4_MATMUL(x, packed, scale[:, :1], tensor_scale, False)
    with pytest.raises(ValueError, match="nvfp4_matmul needs"):
        NVFP4_MATMUL(x[:, :40], packed, scale, tensor_scale, False)
    with pytest.raises(ValueError, match="nvfp4_matmul needs"):
        NVFP4_MATMUL(x, packed, scale.float(), tensor_scale, False)
    with pytest.raises(ValueError, match="nvfp4_matmul needs"):
        NVFP4_MATMUL(x, packed, scale, torch.ones(2), False)


@pytest.fixture(scope="module")
def modelopt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    out = tmp_path_factory.mktemp("fp4-native") / "ckpt"
    reference, _ = write_modelopt(out, seed=6)
    return out, reference


@needs_fp4
def test_a_modelopt_checkpoint_loads_on_the_kernel_by_default(modelopt: tuple[Path, Any]) -> None:
    """On a CPU the plan picks cpu-fp4; every quantized layer is an Fp4Linear holding the stored
    bytes, and float32 logits agree with the dense reference model to float32 rounding."""
    out, reference = modelopt
    loaded = qd.load(out, device="cpu", dtype="float32").unwrap()
    assert loaded.plan.backend.name == "cpu-fp4"
    layers = [m for m in loaded.model.modules() if isinstance(m, Fp4Linear)]
    assert len(layers) == 14 and not any(isinstance(m, PackedLinear) for m in loaded.model.modules())
    # the stored bytes in place (the file's mapped pages): no float32 copy of the block scales
    assert all(m.scale.dtype == torch.uint8 and m.scale.numel() * 8 == m.packed.numel() for m in layers)
    assert not any(t.untyped_storage().resizable() for m in layers for t in (m.packed, m.scale))
    ids = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for step in (ids[:, :1], ids):  # one row: the fused loop; six rows per layer call: still fused
            got, expected = loaded.model(step).logits, reference(step).logits
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
