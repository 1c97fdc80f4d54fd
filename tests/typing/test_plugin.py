"""A third-party method plugs in end to end; bad registrations fail at registration time."""

from __future__ import annotations

import attrs
import pytest

import quantdispatch as qd
from quantdispatch.jsonvalue import JsonObject

from .qd_plugin import HQQ_SPEC, HQQ_TORCH, Hqq, register

register()


def test_plugin_config_parses_validates_and_round_trips() -> None:
    """The plugin's method string parses to its type, with every issue coded under its prefix."""
    doc = {"quant_method": "hqq_flat", "nbits": 2, "group_size": 32, "note": "kept"}
    parsed = qd.parse(doc)
    assert parsed == qd.Ok(Hqq(nbits=2, group_size=32, extras=JsonObject((("note", "kept"),))))
    assert qd.dump(parsed.value) == doc
    bad = qd.parse({"quant_method": "hqq_flat", "nbits": 5, "axis": 2})
    assert isinstance(bad, qd.Err) and [i.code for i in bad.error] == ["hqq_flat.nbits.not_allowed", "hqq_flat.axis.not_allowed"]
    assert qd.validate(Hqq(group_size=0)).error[0].code == "hqq_flat.group_size.range"  # type: ignore[union-attr]


def test_plugin_backend_is_dispatched_and_planned() -> None:
    """plan picks the plugin's backend by dispatch on the plugin's type, with the plugin's rules."""
    env = qd.Environment(packages=(qd.Package("torch", qd.Version.parse("2.13.0")), qd.Package("hqq", qd.Version.parse("0.2"))))
    p = qd.plan(Hqq(), env)
    assert isinstance(p, qd.Ok) and p.value.backend.name == "hqq-torch" and p.value.dtype is qd.DType.BFLOAT16
    assert p.value.backend.loader == "tests.typing.qd_plugin.kernels:load_hqq"
    r = qd.plan(Hqq(nbits=1), env)
    assert isinstance(r, qd.Err) and "1-bit needs the CUDA kernel" in r.error[0].message
    on_load = qd.plan(None, env, qd.LoadOptions(user_config=Hqq()))
    assert isinstance(on_load, qd.Ok) and not on_load.value.pre_quantized


def test_probe_reports_what_registered_backends_require() -> None:
    """probe() records the versions of packages that plugins' declared backends import."""
    from quantdispatch.probing import relevant_packages

    assert "hqq" in relevant_packages() and "torch" in relevant_packages()


def test_duplicate_registrations_are_refused() -> None:
    """Registering a method string, a config type or a dispatch signature twice raises at once."""
    with pytest.raises(qd.RegistrationError, match="already registered"):
        qd.register_codec((HQQ_SPEC,))
    with pytest.raises(qd.RegistrationError, match="already declared"):
        qd.declare_backend(attrs.evolve(HQQ_TORCH, summary="another"))
    with pytest.raises(qd.RegistrationError, match="already has an implementation"):
        qd.register_backend(Hqq, qd.AbstractDevice)(lambda c, d: qd.Refusal("x", "y"))


def test_ambiguous_registration_is_refused() -> None:
    """(A, Cuda) against an existing (B, AbstractDevice) where A and B overlap neither way round is refused."""

    @attrs.frozen(kw_only=True)
    class HqqChild(Hqq):
        pass

    @attrs.frozen
    class Tpu(qd.AbstractDevice):
        pass

    def for_child(config: HqqChild, device: qd.AbstractDevice, /) -> qd.Refusal:
        return qd.Refusal("x", "y")

    def for_tpu(config: Hqq, device: Tpu, /) -> qd.Refusal:
        return qd.Refusal("x", "y")

    qd.register_backend(HqqChild, qd.AbstractDevice)(for_child)
    with pytest.raises(qd.RegistrationError, match="ambiguous"):
        qd.register_backend(Hqq, Tpu)(for_tpu)

    @attrs.frozen(kw_only=True)
    class Unrelated(qd.AbstractQuantConfig):
        pass

    with pytest.raises(qd.RegistrationError, match="annotated"):
        qd.register_backend(Unrelated, qd.Cpu)(for_tpu)  # type: ignore[arg-type]


def test_the_plugin_loader_imports() -> None:
    """The loader the example names exists: it imports and refuses with a coded issue, not an ImportError."""
    from quantdispatch.layouts import Lazy

    assert HQQ_TORCH.loader is not None
    module, _, name = HQQ_TORCH.loader.partition(":")
    assert callable(Lazy[object](module, name).resolve())
