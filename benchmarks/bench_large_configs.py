"""Time parse + validate of the largest real configs against Transformers on the same input, one run.

The configs are the biggest of ``../shared/realworld/configs``: FP8 configs with tens of KB of
``modules_to_not_convert``, compressed-tensors configs with long ``ignore`` lists, ModelOpt files
with a per-layer ``quantized_layers`` table. Ours is ``parse`` + ``validate`` (a fresh parse each
call, so validation is not skipped); Transformers' is ``AutoQuantizationConfig.from_dict(deepcopy(d))``,
which builds and checks its config class (compressed-tensors' pydantic models for that family).
ModelOpt and MLX have no Transformers class: only our time is shown. Each side runs in alternating
blocks; the figure per config is the median µs per call. Target: ours faster (ratio < 1).

Run: ``.venv/bin/python benchmarks/bench_large_configs.py [--repeat N] [--min-bytes B]``
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Final

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers.quantizers.auto import AutoQuantizationConfig

import quantdispatch as qd

REALWORLD: Final = Path(__file__).resolve().parents[2] / "shared" / "realworld" / "configs"
DEFAULT_METHOD: Final = {"modelopt": "modelopt", "mlx": "mlx"}


def load(min_bytes: int) -> list[tuple[str, dict[str, object], str | None]]:
    """The real configs of at least ``min_bytes`` that we parse, largest first."""
    out = []
    for p in sorted(REALWORLD.glob("*/*.json"), key=lambda p: -p.stat().st_size):
        if p.stat().st_size < min_bytes or p.parent.name in ("invalid",):
            continue
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            continue
        dm = DEFAULT_METHOD.get(p.parent.name) if isinstance(d, dict) and "quant_method" not in d else None
        if isinstance(d, dict) and isinstance(qd.parse(d, default_method=dm), qd.Ok):
            out.append((f"{p.parent.name}/{p.name}", d, dm))
    return out


def ours(d: dict[str, object], dm: str | None) -> Callable[[], object]:
    def run() -> object:
        parsed = qd.parse(d, default_method=dm)
        assert isinstance(parsed, qd.Ok)
        checked = qd.validate(parsed.value)
        assert isinstance(checked, qd.Ok)
        return checked
    return run


def theirs(d: dict[str, object]) -> Callable[[], object] | None:
    qm = d.get("quant_method")
    if qm in ("sparseml", "compressed_tensors"):
        d = {**d, "quant_method": "compressed-tensors"}  # Transformers dispatches only the current spelling
    def run() -> object:
        return AutoQuantizationConfig.from_dict(copy.deepcopy(d))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run()
    except Exception:
        return None
    return run


def per_call_ns(run: Callable[[], object], n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        run()
    return (time.perf_counter_ns() - start) / n


def calls_per_block(run: Callable[[], object]) -> int:
    n = 1
    while per_call_ns(run, n) * n < 20e6:  # blocks of ~20 ms
        n *= 2
    return n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--min-bytes", type=int, default=1500)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    rows = []
    print(f"{'config':<78} {'bytes':>6} {'ours µs':>9} {'TF µs':>9} {'ratio':>6}")
    for name, d, dm in load(args.min_bytes):
        a, b = ours(d, dm), theirs(d)
        na = calls_per_block(a)
        nb = calls_per_block(b) if b else 0
        xs, ys = [], []
        for _ in range(args.repeat):
            xs.append(per_call_ns(a, na))
            if b:
                ys.append(per_call_ns(b, nb))
        us = statistics.median(xs) / 1e3
        them = statistics.median(ys) / 1e3 if ys else None
        size = len(json.dumps(d))
        ratio = f"{us / them:6.2f}" if them else "   n/a"
        print(f"{name:<78} {size:>6} {us:9.1f} {them if them is None else round(them, 1)!s:>9} {ratio}")
        if them:
            rows.append(us / them)
    if rows:
        verdict = "meets" if statistics.median(rows) < 1 else "misses"
        print(f"\nmedian ratio over {len(rows)} configs with a Transformers class: {statistics.median(rows):.2f}x "
              f"(worst {max(rows):.2f}x): {verdict} the 'ours faster' target")


if __name__ == "__main__":
    main()
