"""The example plugin's loader, named by ``HQQ_TORCH.loader``: it exists and imports, as every
declared loader must (``tests/unit/test_layouts.py``). It refuses with a coded issue: running HQQ
needs the ``hqq`` package's kernels, which this typing example does not ship (``tests/plugins``
holds a plugin that loads end to end)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import quantdispatch as qd
from quantdispatch.loading.request import LoadRequest

if TYPE_CHECKING:
    from torch import nn

__all__ = ["load_hqq"]


def load_hqq(request: LoadRequest) -> qd.Result[tuple[nn.Module, int], qd.Issues]:
    """Refuse: the example plans HQQ but carries no kernel for it."""
    return qd.Err((qd.Issue("hqq_flat.loader.example", "$", "the example plugin plans hqq_flat but ships no kernel to run it",
                            "install a plugin that registers an HQQ kernel"),))
