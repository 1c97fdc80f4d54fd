"""Planning a checkpoint whose method string nobody registered: refused, or loaded in full
precision on purpose, and in either case said plainly."""

from __future__ import annotations

from .backend import Backend, DeviceKind, Requirement, unmet
from .codec.registry import select_spec
from .configs.unknown import UnknownMethod
from .dtypes import DType
from .environment import Cuda, Environment, Mps
from .load_plan import LoadOptions, LoadPlan, resolve_device
from .result import Err, Issue, Issues, Ok, Result
from .rules import declare_backend
from .text import quote

__all__ = ["FULL_PRECISION", "plan_unknown"]

FULL_PRECISION = declare_backend(Backend(
    name="full-precision", summary="no quantization: the weights as stored, in the compute dtype (quantization_config ignored)",
    requires=(Requirement("torch", "2.4"),), devices=("cpu", "cuda", "mps"),
))


def _nearest(name: str) -> str | None:
    """The discriminator's own hint for this method string (the nearest known one)."""
    found = select_spec({"quant_method": name}, "$")
    if isinstance(found, Err) and found.error and found.error[0].code == "method.unknown":
        return found.error[0].hint
    return None


def plan_unknown(config: UnknownMethod, env: Environment, options: LoadOptions) -> Result[LoadPlan, Issues]:
    """Plan an ``UnknownMethod`` checkpoint: refuse it, or (when asked) load it in full precision."""
    where = "$.quant_method"
    if options.unknown_method != "full_precision":
        hint = (_nearest(config.name) or "no known method is close") + (
            "; to load the weights as stored, ignoring the quantization config, pass LoadOptions(unknown_method='full_precision')")
        return Err((Issue("plan.method.unregistered", where, f"the checkpoint's quant_method {quote(config.name)} is read by no "
                          "registered method: refusing to load it rather than guess", hint),))
    device = resolve_device(options.device, env)
    if isinstance(device, Issue):
        return Err((device,))
    kind: DeviceKind = "cuda" if isinstance(device, Cuda) else "mps" if isinstance(device, Mps) else "cpu"
    dtype = options.dtype or (DType.BFLOAT16 if kind != "cpu" else DType.FLOAT32)
    reasons = unmet(FULL_PRECISION, env, kind, device.capability if isinstance(device, Cuda) else None, dtype)
    if reasons:
        return Err((Issue("plan.no_usable_backend", "$", f"cannot load in full precision on {device.label}: {'; '.join(reasons)}"),))
    note = (f"quant_method {quote(config.name)} is registered by no method; as asked (unknown_method='full_precision') the "
            "quantization config is ignored and the weights are loaded as stored: if they are really quantized, the load fails "
            "on their shapes or gives a wrong model")
    return Ok(LoadPlan(config=config, pre_quantized=False, device=device, dtype=dtype, backend=FULL_PRECISION, skip_modules=(),
                       notes=(note, f"dtype {dtype.value}: {'requested' if options.dtype else 'the default for ' + kind}")))
