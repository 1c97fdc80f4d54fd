"""Planning: a pure function of (config, environment, options) that decides how a load will go.

``plan`` checks its arguments, validates the configs, reconciles a user's config with the
checkpoint's, picks the device, settles the compute dtype and asks ``select_backend`` for
candidates, checking each against the environment. Every per-method decision (compute dtype,
skipped modules, whether weights may be quantized while loading) is a dispatched rule of
``quantdispatch.rules`` that a plugin can extend. The resulting ``LoadPlan`` explains every
decision. Nothing is imported, probed or loaded here, and nothing raises on bad arguments.
"""

from __future__ import annotations

from typing import Any

import attrs

from . import methods as _methods  # noqa: F401  (registers the built-in rules)
from .backend import Backend, Candidate, DeviceKind, Refusal, unmet
from .codec.registry import spec_for
from .configs.base import AbstractQuantConfig
from .configs.unknown import UnknownMethod
from .dtypes import DType
from .environment import AbstractDevice, Cuda, Environment, Mps
from .kernel import kernel_candidates, kernel_named, renamed
from .layouts import layout_of
from .load_plan import RANKED_BELOW as RANKED_BELOW
from .load_plan import LoadOptions, LoadPlan, Rejection, resolve_device
from .result import Err, Issue, Issues, Ok, Result
from .rules import Selection, backend_notes, compute_dtype, quantizes_on_load, select_backend, skip_modules
from .text import printable, quote
from .unknown import plan_unknown
from .validate import validate

__all__ = ["LoadOptions", "LoadPlan", "Rejection", "Reconciled", "plan", "reconcile"]


@attrs.frozen
class Reconciled:
    """The outcome of reconciling a user's config with a checkpoint's.

    Attributes:
        config: The config that will be loaded (the checkpoint's when there is one).
        pre_quantized: Whether the weights on disk are already quantized.
        overrides: Loading attributes taken from the user's config, as ``(key, value)``.
        notes: What happened to the user's config, in plain words.
    """

    config: AbstractQuantConfig
    pre_quantized: bool
    overrides: tuple[tuple[str, object], ...] = ()
    notes: tuple[str, ...] = ()


def reconcile(checkpoint: AbstractQuantConfig | None, user: AbstractQuantConfig | None) -> Result[Reconciled, Issues]:
    """Combine a checkpoint's config with a user's, with Transformers' semantics made explicit.

    The checkpoint wins. Of the user's config, only the method's loading attributes (GPTQ/AWQ
    ``backend``, ``max_input_length``, the ExLlama settings; GGUF ``dequantize``…) apply, where
    they differ from the checkpoint's; anything else the user's config says differently is named
    in ``notes``. A user config of another method is an error. Equal configs reconcile alike.
    """
    if checkpoint is None and user is None:
        return Err((Issue("plan.no_config", "$", "neither the checkpoint nor the caller gives a quantization config"),))
    if checkpoint is None:
        assert user is not None
        return Ok(Reconciled(user, pre_quantized=False, notes=("the checkpoint is not quantized: weights are quantized while loading",)))
    if user is None:
        return Ok(Reconciled(checkpoint, pre_quantized=True))
    if user.method != checkpoint.method:
        return Err((Issue("reconcile.method.mismatch", "$", f"the checkpoint is quantized with {checkpoint.method!r} "
                          f"({type(checkpoint).__name__}) but the config passed is {user.method!r} ({type(user).__name__})",
                          "pass a config of the checkpoint's method (only its loading attributes apply), or none"),))
    return Ok(_merge(checkpoint, user))


def _merge(checkpoint: AbstractQuantConfig, user: AbstractQuantConfig) -> Reconciled:
    spec = spec_for(type(checkpoint))
    loading = spec.loading_attributes if spec else ()
    notes: list[str] = []
    overrides: tuple[tuple[str, object], ...] = ()
    if type(user) is not type(checkpoint):
        notes.append(f"your {type(user).__name__} is ignored: the checkpoint is {type(checkpoint).__name__}")
    else:
        overrides = tuple((a, getattr(user, a)) for a in loading if getattr(user, a) != getattr(checkpoint, a))
        changed = sorted(a.name for a in attrs.fields(type(user)) if a.eq and a.name != "extras" and a.name not in loading
                         and getattr(user, a.name) != getattr(checkpoint, a.name))
        if changed:
            notes.append("your config differs from the checkpoint's in " + ", ".join(changed) + "; the checkpoint's values are used")
    if not loading:
        notes.append(f"{checkpoint.method} has no loading attributes: nothing of your config applies")
    changes: dict[str, Any] = dict(overrides)
    config = attrs.evolve(checkpoint, **changes) if overrides else checkpoint
    return Reconciled(config, pre_quantized=True, overrides=overrides, notes=tuple(notes))


def _option_issues(options: object, env: object) -> Issues:
    """The checks a typed caller never fails and an untyped one may: an argument of the wrong
    type is an issue, not an ``AttributeError`` deep inside."""
    if not isinstance(options, LoadOptions):
        return (Issue("plan.options.type", "$", f"expected LoadOptions, got {type(options).__name__}"),)
    if not isinstance(env, Environment):
        return (Issue("plan.environment.type", "$", f"expected an Environment, got {type(env).__name__}", "use probe()"),)
    issues: list[Issue] = []
    dtype: object = options.dtype
    backend: object = options.backend
    user: object = options.user_config
    given_devices: object = env.devices
    if dtype is not None and not isinstance(dtype, DType):
        issues.append(Issue("plan.dtype.type", "$.dtype", f"expected a DType, got {type(dtype).__name__} {quote(dtype)}",
                            "use quantdispatch.DType (DType.FLOAT16), or DType.from_json('float16')"))
    if backend is not None and not isinstance(backend, str):
        issues.append(Issue("plan.backend.type", "$.backend", f"expected a backend name, got {type(backend).__name__}"))
    if user is not None and not isinstance(user, AbstractQuantConfig):
        issues.append(Issue("plan.user_config.type", "$.user_config", f"expected a quantization config, got {type(user).__name__}"))
    devices: tuple[object, ...] = given_devices if isinstance(given_devices, tuple) else ()
    for i, d in enumerate(devices):
        if not isinstance(d, AbstractDevice) or (isinstance(d, Cuda) and not _valid_cuda(d)):
            issues.append(Issue("plan.environment.device", f"$.devices[{i}]", f"not a valid device: {quote(d)}",
                                "a Cuda device has an integer index and a (major, minor) capability"))
    return tuple(issues)


def _valid_cuda(d: Cuda) -> bool:
    cap: object = d.capability
    return (type(d.index) is int and isinstance(cap, tuple) and len(cap) == 2
            and all(type(x) is int and 0 <= x < 1000 for x in cap))


def plan(config: AbstractQuantConfig | None, environment: Environment, options: LoadOptions = LoadOptions()) -> Result[LoadPlan, Issues]:
    """Decide how to load: device, dtype and backend, explaining every choice. Pure and total.

    Args:
        config: The checkpoint's config (``None`` for an unquantized checkpoint, with
            ``options.user_config`` saying how to quantize it).
        environment: What is installed and which devices exist (``probe()`` or hand-built).
        options: Device, dtype, backend and the user's config.

    >>> from quantdispatch import Gptq, Environment, Cpu, Cuda, Package, Version
    >>> env = Environment(packages=(Package("torch", Version.parse("2.13.0")),), devices=(Cpu(), Cuda(capability=(7, 0))))
    >>> p = plan(Gptq(bits=4), env).value
    >>> p.backend.name, p.device.label, p.rejected[0].reasons
    ('torch-packed', 'cuda:0', ('needs gptqmodel>=1.4.3, which is not installed', 'needs compute capability 8.0+, the GPU has 7.0'))
    """
    problems = _option_issues(options, environment)
    if problems:
        return Err(problems)
    if isinstance(config, UnknownMethod):
        return plan_unknown(config, environment, options)
    for given in (config, options.user_config):
        if given is not None:
            checked = validate(given)
            if isinstance(checked, Err):
                return checked
    merged = reconcile(config, options.user_config)
    if isinstance(merged, Err):
        return merged
    r = merged.value
    if not r.pre_quantized and not quantizes_on_load(r.config):
        return Err((Issue(f"plan.{r.config.method}.needs_calibration", "$", f"{type(r.config).__name__} weights cannot be made while "
                          "loading: the method needs calibration data and a quantization run",
                          "quantize with the method's own tool (GPTQModel, llm-compressor…), then load the result"),))
    device = resolve_device(options.device, environment)
    if isinstance(device, Issue):
        return Err((device,))
    dtype, why = (options.dtype, "requested") if options.dtype else compute_dtype(r.config, device)
    selection = _with_layout_kernels(select_backend(r.config, device), r.config, device, r.pre_quantized)
    if isinstance(selection, Refusal):
        return Err((Issue(selection.code, "$", selection.message, selection.hint),))
    forced, renamed_note = _current_name(options.backend, r.config)
    chosen, rejected = _choose(selection, environment, device, dtype, forced, options.executable)
    if chosen is None:
        detail = "; ".join(f"{x.backend}: {', '.join(x.reasons)}" for x in rejected)
        return Err((Issue("plan.no_usable_backend", "$", f"no backend can load {type(r.config).__name__} on {device.label}: {detail}",
                          "install what the first backend needs, or choose another device or dtype"),))
    notes = (*r.notes, *renamed_note, f"dtype {dtype.value}: {why}", *backend_notes(r.config).get(chosen.name, ()),
             *_layout_notes(r.config, chosen, device))
    return Ok(LoadPlan(config=r.config, pre_quantized=r.pre_quantized, device=device, dtype=dtype, backend=chosen,
                       rejected=rejected, skip_modules=skip_modules(r.config), overrides=r.overrides, notes=notes))


def _with_layout_kernels(selection: Selection, config: AbstractQuantConfig, device: AbstractDevice, pre_quantized: bool = True) -> Selection:
    """The method's candidates, preceded by every kernel serving the config's layout that the
    method's rule did not rank itself: a layout file is enough for its kernels to be offered. A
    refusal stands unless such kernels exist. Kernels read weights stored in their layout: for a
    checkpoint that is not quantized yet (a method that quantizes while loading) each stays a
    candidate with that reason, so that none loads the full-precision weights as they are."""
    served = kernel_candidates(layout_of(config), device)
    if isinstance(selection, Refusal):
        found: Selection = served or selection
    else:
        named = {c.backend.name for c in selection}
        found = (*(c for c in served if c.backend.name not in named), *selection)
    if pre_quantized or isinstance(found, Refusal):
        return found
    return tuple(Candidate(c.backend, (*c.unfit, _NOT_QUANTIZED)) if kernel_named(c.backend.name) is not None else c for c in found)


_NOT_QUANTIZED = "reads weights a checkpoint stores in its layout, and these are not quantized yet: it quantizes nothing while loading"


def _layout_notes(config: AbstractQuantConfig, chosen: Backend, device: AbstractDevice) -> tuple[str, ...]:
    """The layout's own notes (``AbstractLayout.notes``) when the chosen backend is a kernel serving it."""
    layout = layout_of(config)
    if layout is None or all(c.backend.name != chosen.name for c in kernel_candidates(layout, device)):
        return ()
    return layout.notes()


def _current_name(forced: str | None, config: AbstractQuantConfig) -> tuple[str | None, tuple[str, ...]]:
    """A backend name from before kernels lost their method, as the kernel's name, and the note saying so."""
    old = renamed(forced, config) if forced is not None else None
    if old is None:
        return forced, ()
    return old.new, (f"backend {old.old!r} is now called {old.new!r}: the same kernel, which serves every layout "
                     f"that converts to its input; pass backend={old.new!r}",)


def _choose(candidates: tuple[Candidate, ...], env: Environment, device: AbstractDevice, dtype: DType,
            forced: str | None, executable: bool = False) -> tuple[Backend | None, tuple[Rejection, ...]]:
    kind: DeviceKind = "cuda" if isinstance(device, Cuda) else "mps" if isinstance(device, Mps) else "cpu"
    capability = device.capability if isinstance(device, Cuda) else None
    rejected: list[Rejection] = []
    chosen: Backend | None = None
    for c in candidates:
        reasons = c.unfit + unmet(c.backend, env, kind, capability, dtype)
        if executable and c.backend.loader is None:
            reasons += ("this version can plan it but has no loader for it yet",)
        if forced is not None and c.backend.name != forced:
            reasons = (f"not requested (backend={quote(forced, 60)})",)
        if chosen is None and not reasons:
            chosen = c.backend
        else:
            rejected.append(Rejection(c.backend.name, reasons or (RANKED_BELOW,)))
    if forced is not None and all(c.backend.name != forced for c in candidates):
        rejected.append(Rejection(printable(forced[:100]), ("not a candidate for this config and device",)))
    return chosen, tuple(rejected)
