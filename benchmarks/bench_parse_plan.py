"""Time config handling: our parse + validate + plan against Transformers' config + quantizer, same run.

Per config, ours is ``parse`` + ``validate`` + ``plan`` (with a hand-built environment: torch,
bitsandbytes and gptqmodel installed, a CPU), and Transformers' is
``AutoQuantizationConfig.from_dict(deepcopy(d))`` + ``AutoHfQuantizer.from_config(cfg, pre_quantized=True)``,
the work ``from_pretrained`` does before touching weights (the deepcopy is there because
Transformers may mutate its input). Where Transformers cannot build a quantizer here (its GPTQ
quantizer needs gptqmodel, which the dev environment does not install), only ``from_dict`` is
timed, and the table says so: that side's time is then a lower bound and our ratio a pessimistic one.

The configs are the real bnb/GPTQ/AWQ ones of ``../shared/realworld/configs`` when present, plus a
few typical generated ones. Each side is timed in alternating blocks; the figure per config is the
median µs per call, and per family and overall the median of those. Target: ours <= 0.5x theirs.

Run: ``.venv/bin/python benchmarks/bench_parse_plan.py [--repeat N]``
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Final

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from transformers.quantizers.auto import AutoHfQuantizer, AutoQuantizationConfig

import quantdispatch as qd

REALWORLD: Final = Path(__file__).resolve().parents[2] / "shared" / "realworld" / "configs"
FAMILIES: Final = {"bnb-4bit": "bnb", "bnb-8bit": "bnb", "gptq": "gptq", "awq": "awq"}
TARGET: Final = 0.5
ENV: Final = qd.Environment(
    packages=(qd.Package("torch", qd.Version.parse("2.13.0")), qd.Package("bitsandbytes", qd.Version.parse("0.50.2")),
              qd.Package("gptqmodel", qd.Version.parse("7.6.0"))),
    devices=(qd.Cpu(),),
)
GENERATED: Final[tuple[tuple[str, str, dict[str, object]], ...]] = (
    ("bnb", "gen/bnb-nf4-bf16-double-quant", {
        "quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False, "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_use_double_quant": True, "bnb_4bit_quant_storage": "uint8",
        "llm_int8_skip_modules": ["lm_head"]}),
    ("bnb", "gen/bnb-8bit", {"quant_method": "bitsandbytes", "load_in_8bit": True, "llm_int8_threshold": 6.0}),
    ("gptq", "gen/gptq-v2-gptqmodel", {
        "quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True, "format": "gptq_v2",
        "damp_percent": 0.05, "true_sequential": True, "meta": {"quantizer": ["gptqmodel:2.2.0"], "uri": "x"}}),
    ("awq", "gen/awq-gemm-vision", {
        "quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm",
        "modules_to_not_convert": ["visual"]}),
    ("awq", "gen/awq-gemv-fast", {"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": True,
                                  "version": "gemv_fast"}),
)


def load_configs() -> list[tuple[str, str, dict[str, object], str | None]]:
    """(family, name, dict, default_method) for every real and generated config."""
    out: list[tuple[str, str, dict[str, object], str | None]] = []
    for folder, family in FAMILIES.items():
        for path in sorted((REALWORLD / folder).glob("*.json")) if REALWORLD.is_dir() else []:
            d = json.loads(path.read_text(encoding="utf-8"))
            default = "gptq" if family == "gptq" and "quant_method" not in d else None
            out.append((family, f"{folder}/{path.stem}", d, default))
    out += [(family, name, d, None) for family, name, d in GENERATED]
    return out


def ours(d: dict[str, object], default_method: str | None) -> Callable[[], object]:
    """Our pipeline for ``d``: parse, validate, plan."""
    def run() -> object:
        parsed = qd.parse(d, default_method=default_method)
        assert isinstance(parsed, qd.Ok), parsed
        checked = qd.validate(parsed.value)
        assert isinstance(checked, qd.Ok), checked
        return qd.plan(checked.value, ENV)

    return run


def stages(d: dict[str, object], default_method: str | None, repeat: int) -> tuple[float, float, float]:
    """Median µs of our parse, validate and plan alone, for the breakdown columns."""
    parsed = qd.parse(d, default_method=default_method)
    assert isinstance(parsed, qd.Ok), parsed
    config = parsed.value
    runs: tuple[Callable[[], object], ...] = (
        lambda: qd.parse(d, default_method=default_method), lambda: qd.validate(config), lambda: qd.plan(config, ENV))
    parse_us, validate_us, plan_us = (per_call_ns(run, repeat) / 1e3 for run in runs)
    return parse_us, validate_us, plan_us


def theirs(d: dict[str, object], default_method: str | None) -> tuple[Callable[[], object], bool]:
    """Transformers' pipeline for ``d``, and whether it includes the quantizer (it fails without gptqmodel)."""
    given = dict(d) if default_method is None else {**d, "quant_method": default_method}

    def full() -> object:
        cfg = AutoQuantizationConfig.from_dict(copy.deepcopy(given))
        return AutoHfQuantizer.from_config(cfg, pre_quantized=True)

    def config_only() -> object:
        return AutoQuantizationConfig.from_dict(copy.deepcopy(given))

    try:
        full()
    except Exception:
        config_only()
        return config_only, False
    return full, True


def per_call_ns(run: Callable[[], object], n: int) -> float:
    """Median ns of one call over ``n`` calls, timed in 10 batches (a batch's mean is one sample)."""
    batch = max(1, n // 10)
    samples = []
    for _ in range(10):
        start = time.perf_counter_ns()
        for _ in range(batch):
            run()
        samples.append((time.perf_counter_ns() - start) / batch)
    return statistics.median(samples)


def compare(a: Callable[[], object], b: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median µs per call of ``a`` and of ``b``, alternating blocks so that drift hits both alike."""
    a(), b()  # warm caches and lazy imports
    xs, ys = [], []
    for _ in range(5):
        xs.append(per_call_ns(a, repeat // 5))
        ys.append(per_call_ns(b, repeat // 5))
    return statistics.median(xs) / 1e3, statistics.median(ys) / 1e3


Result = tuple[str, str, float, float, bool, tuple[float, float, float]]


def _row(r: Result) -> str:
    _, name, us, them, with_quantizer, (p, v, pl) = r
    note = "" if with_quantizer else "  (TF: from_dict only, no quantizer)"
    return f"{name[:58]:<58} {us:>8.1f} {them:>7.1f} {us / them:>6.2f}x  {p:>6.1f} {v:>6.1f} {pl:>6.1f}{note}"


def main() -> None:
    """Time every config and print a table: per config, per family, overall."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=500, help="calls per config and side (default 500)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    results: list[Result] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for family, name, d, default in load_configs():
            run_theirs, with_quantizer = theirs(d, default)
            us, them = compare(ours(d, default), run_theirs, args.repeat)
            results.append((family, name, us, them, with_quantizer, stages(d, default, args.repeat // 5)))
    print(f"{'config':<58} {'ours µs':>8} {'TF µs':>7} {'ratio':>7}  {'parse':>6} {'valid.':>6} {'plan':>6}")
    for r in results:
        print(_row(r))
    print()
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(r[0], []).append(r)
    groups["overall"] = results
    for group, rows in groups.items():
        us, them = statistics.median(r[2] for r in rows), statistics.median(r[3] for r in rows)
        ratio = statistics.median(r[2] / r[3] for r in rows)
        partial = " (TF side without quantizer for GPTQ)" if not all(r[4] for r in rows) else ""
        verdict = "meets" if ratio <= TARGET else "MISSES"
        print(f"{group + ' (' + str(len(rows)) + ' configs)':<20} median ours {us:7.1f} µs, TF {them:7.1f} µs, "
              f"median ratio {ratio:5.2f}x: {verdict} the <= {TARGET}x target{partial}")

if __name__ == "__main__":
    main()
