"""A compiled decode step for a loaded model, inside Transformers' own model classes.

At decode, a step of a small or mid-size model spends much of its time outside the weight
layers: Transformers' Python for each layer (norms, rotary, attention, the cache's bookkeeping).
``StaticDecoder`` keeps the model as it is and changes two things around it:

- a ``StaticCache`` (Transformers' own) sized once, so every step has the same shapes;
- the one-token step compiled by ``torch.compile`` (``fullgraph=True``, static shapes): dynamo
  traces Transformers' forward once, quantdispatch's kernels are custom ops (one opaque node
  each, no graph break), and inductor fuses the norms, rotary and residual arithmetic into a few
  generated loops.

Prefill runs eagerly (its length changes from prompt to prompt). The first step compiles (tens of
seconds on a CPU); later steps reuse it. ``generate`` in Transformers can do the same
(``compiled_generation_config``) and stays the API users call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["StaticDecoder", "compiled_generation_config"]


class StaticDecoder:
    """Greedy-decoding helper over ``model`` with a static cache of ``max_cache_len`` positions and
    (``compile=True``) a one-token step compiled whole (``fullgraph=True``: a graph break raises)
    by ``backend`` (``torch.compile``'s: inductor by default).

    >>> # decoder = StaticDecoder(model, max_cache_len=256); logits = decoder.prefill(ids); logits = decoder.step(token)
    """

    def __init__(self, model: nn.Module, *, max_cache_len: int, compile: bool = True, backend: Any = "inductor") -> None:
        import torch
        from transformers import StaticCache

        if max_cache_len < 1:
            raise ValueError(f"max_cache_len must be positive, got {max_cache_len}")
        self.model = model
        self.max_cache_len = max_cache_len
        config: Any = getattr(model, "config", None)
        with torch.inference_mode():
            self.cache = StaticCache(config=config, max_cache_len=max_cache_len)
        self.position = 0
        forward: Any = model

        def one(token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = forward(token, cache=self.cache, cache_position=position, use_cache=True).logits
            return logits

        self._eager = one
        self._step = torch.compile(one, fullgraph=True, dynamic=False, backend=backend) if compile else one

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Reset the cache and run the prompt ``ids`` (``[1, n]``) eagerly; the logits."""
        import torch

        n = ids.shape[-1]
        if n > self.max_cache_len:
            raise ValueError(f"a prompt of {n} tokens does not fit a cache of {self.max_cache_len}")
        with torch.inference_mode():
            self.cache.reset()
            logits: torch.Tensor = self._eager(ids, torch.arange(n, device=ids.device))
        self.position = n
        return logits

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """One decode step for ``token`` (``[1, 1]``) at the next position; the logits."""
        import torch

        if self.position >= self.max_cache_len:
            raise ValueError(f"the cache of {self.max_cache_len} positions is full")
        with torch.inference_mode():
            logits = self._step(token, torch.tensor([self.position], device=token.device))
        self.position += 1
        return logits


def compiled_generation_config(model: nn.Module) -> Any:
    """``model``'s generation config set to decode with a static cache and a compiled step on any
    device, Transformers' own mechanism (``cache_implementation="static"`` and a ``CompileConfig``
    that is not limited to accelerators). Pass it as ``generate(..., generation_config=...)``."""
    import copy

    from transformers import CompileConfig

    base: Any = getattr(model, "generation_config", None)
    if base is None:
        raise ValueError("the model has no generation_config: it is not a Transformers generative model")
    config = copy.deepcopy(base)
    config.cache_implementation = "static"
    config.compile_config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
    config.compile_config._compile_all_devices = True
    return config
