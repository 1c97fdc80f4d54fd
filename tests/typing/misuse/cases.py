# Misuse of the public API that mypy --strict must reject. Each line ending in "# E: code"
# must produce exactly that error code on that line; no other line may produce an error.
# This file is excluded from the package-wide mypy run and checked by test_misuse.py.
from __future__ import annotations

import attrs

import quantdispatch as qd

cfg = qd.Gptq(bits=4)
cfg.bits = 8  # E: misc
qd.Gptq(bits=5)  # E: arg-type
qd.Gptq(group_size=64)  # E: call-arg
qd.Bnb4Bit(quant_type="int3")  # E: arg-type
qd.Bnb4Bit(compute_dtype="bfloat16")  # E: arg-type
qd.AwqGemm(bits=8)  # E: arg-type
qd.Bnb4Bit(threshold=6.0)  # E: call-arg
r = qd.parse({"bits": 4})
r.value  # E: union-attr
n: int = qd.dump(cfg)  # E: assignment
qd.plan(cfg, qd.Cuda())  # E: arg-type
qd.LoadOptions(dtype="float16")  # E: arg-type
attrs.evolve(cfg, bits="4")  # E: arg-type
ok_use = attrs.evolve(cfg, bits=8)
