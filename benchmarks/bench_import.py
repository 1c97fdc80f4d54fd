"""Time ``import quantdispatch`` against ``from transformers import BitsAndBytesConfig``, in fresh interpreters.

Each statement runs in a new ``sys.executable -c`` process, alternating between the two (and a bare
``pass`` for the interpreter's own start-up), N times each; the figure is the median wall-clock ms
of the process. The ratio is taken on the wall times as they are and net of the bare start-up.
A last run of each reports whether torch ended up in ``sys.modules``. Target: ours <= 0.2x.

Run: ``.venv/bin/python benchmarks/bench_import.py [--runs N]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Final

STATEMENTS: Final = {
    "python (bare start-up)": "pass",
    "quantdispatch": "import quantdispatch",
    "transformers": "from transformers import BitsAndBytesConfig",
}
TARGET: Final = 0.2
ENV: Final = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}


def wall_ms(statement: str) -> float:
    """Wall-clock ms of a fresh interpreter running ``statement``."""
    start = time.perf_counter_ns()
    subprocess.run([sys.executable, "-c", statement], env=ENV, check=True, capture_output=True)
    return (time.perf_counter_ns() - start) / 1e6


def torch_loaded(statement: str) -> bool:
    """Whether ``statement`` leaves torch in ``sys.modules``."""
    probe = f"{statement}\nimport sys\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], env=ENV, check=True, capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1] == "True"


def main() -> None:
    """Time the imports and print medians, ratios and whether torch was imported."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per statement (default 15)")
    args = parser.parse_args()
    for statement in STATEMENTS.values():  # warm the file-system cache and the .pyc files
        wall_ms(statement)
    times: dict[str, list[float]] = {name: [] for name in STATEMENTS}
    for _ in range(args.runs):
        for name, statement in STATEMENTS.items():
            times[name].append(wall_ms(statement))
    median = {name: statistics.median(ts) for name, ts in times.items()}
    bare = median["python (bare start-up)"]
    print(f"{'statement':<50} {'median ms':>10} {'net ms':>8}  {'min':>7} {'max':>7}  torch imported")
    for name, statement in STATEMENTS.items():
        ts = times[name]
        print(f"{statement:<50} {median[name]:>10.1f} {median[name] - bare:>8.1f}  {min(ts):>7.1f} {max(ts):>7.1f}  "
              f"{torch_loaded(statement)}")
    ours, theirs = median["quantdispatch"], median["transformers"]
    ratio, net = ours / theirs, (ours - bare) / (theirs - bare)
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"\nratio ours/transformers: {ratio:.3f}x wall, {net:.3f}x net of start-up ({args.runs} runs each): "
          f"{verdict} the <= {TARGET}x target")


if __name__ == "__main__":
    main()
