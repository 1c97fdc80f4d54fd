"""Environment values, versions and probe()."""

from __future__ import annotations

import importlib.metadata

import pytest
from hypothesis import given
from hypothesis import strategies as st

import quantdispatch as qd
from quantdispatch.environment import FEATURE_NAMES, MASK_VARIABLE


@pytest.mark.parametrize("text,parts", [("2.13.0+cpu", (2, 13, 0)), ("0.50.2", (0, 50, 2)), ("1.0rc1", (1, 0)), ("garbage", ())])
def test_version_parse(text: str, parts: tuple[int, ...]) -> None:
    """Versions keep their leading release numbers and the text they came from."""
    v = qd.Version.parse(text)
    assert v.parts == parts and str(v) == text


def test_version_order() -> None:
    """Trailing zeros do not count, and comparison is numeric, not textual."""
    assert not qd.Version.parse("2.4") < qd.Version.parse("2.4.0")
    assert qd.Version.parse("0.9.1") < qd.Version.parse("0.46.1")
    assert qd.Version.parse("2.13.0") >= qd.Version.parse("2.4")


def test_version_of_normalises_names() -> None:
    """Distribution names match case- and separator-insensitively."""
    env = qd.Environment(packages=(qd.Package("Auto_GPTQ", qd.Version.parse("0.7.1")),))
    assert env.version_of("auto-gptq") == qd.Version.parse("0.7.1")
    assert env.version_of("torch") is None


def test_requirement_checks() -> None:
    """A requirement names what is missing or too old, and passes in range."""
    env = qd.Environment(packages=(qd.Package("torch", qd.Version.parse("2.13.0")),))
    assert qd.Requirement("torch", "2.4").check(env) is None
    assert qd.Requirement("torch", "2.14").check(env) == "needs torch>=2.14, found 2.13.0"
    assert qd.Requirement("torch", below="2.13").check(env) == "needs torch<2.13, found 2.13.0"
    assert qd.Requirement("gguf").check(env) == "needs gguf, which is not installed"


def test_probe_reads_installed_versions() -> None:
    """probe() reports the installed versions from package metadata and always a CPU."""
    from quantdispatch.probing import cpu_features

    env = qd.probe(devices=False)
    assert env.devices == (qd.Cpu(features=cpu_features()),)
    assert env.version_of("attrs") is None  # not among the relevant packages unless asked for
    assert qd.probe(devices=False, extra=("attrs",)).version_of("attrs") == qd.Version.parse(importlib.metadata.version("attrs"))


def test_probe_finds_torch_devices() -> None:
    """With torch installed, probe() asks it for devices; on a CPU-only machine that is the CPU alone."""
    torch = pytest.importorskip("torch")
    env = qd.probe()
    assert isinstance(env.devices[0], qd.Cpu)
    assert len(env.cuda()) == torch.cuda.device_count()
    assert env.version_of("torch") is not None


def test_cpu_features_are_read_from_cpuinfo_flags() -> None:
    """The flags line of /proc/cpuinfo names the features; unknown flags are ignored."""
    from quantdispatch.probing import features_from_flags

    zen4 = features_from_flags(" fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 ")
    assert zen4 == qd.CpuFeatures(avx2=True, avx512=True, avx512_bf16=True) and zen4.native_bf16
    spr = features_from_flags("avx2 avx512f amx_tile amx_bf16")
    assert spr.amx and spr.native_bf16 and not spr.avx512_bf16
    avx2 = features_from_flags("sse4_2 avx avx2 fma")
    assert avx2.vector_int4 and not avx2.native_bf16 and avx2.names() == ("avx2", "fma")
    assert features_from_flags("") == qd.CpuFeatures()


def test_probe_reads_the_cpu_once_and_reports_it() -> None:
    """probe() puts the host's features in its Cpu; the summary names them."""
    from quantdispatch.probing import cpu_features, host_cpu_features

    assert host_cpu_features() is host_cpu_features()  # cached: read once per process
    env = qd.probe(devices=False)
    cpu = env.devices[0]
    assert isinstance(cpu, qd.Cpu) and cpu.features == cpu_features()
    line = env.summary().splitlines()[-1]
    assert line.startswith("device cpu: ") and all(name in line for name in cpu.features.names())


HOST = qd.CpuFeatures(avx2=True, fma=True, avx512=True, avx512_bf16=True, amx=True)


@pytest.mark.parametrize("spec,kept", [
    ("none", ()), ("NONE", ()), ("avx2,fma", ("avx2", "fma")), (" avx2 , fma ", ("avx2", "fma")),
    ("avx2", ("avx2",)), ("avx512_bf16", ()),  # bf16 needs avx512f: masked with it
    ("avx512f,avx512_bf16,avx2,fma", ("avx2", "fma", "avx512f", "avx512_bf16")), ("amx_bf16", ("amx_bf16",)),
    ("native", HOST.names()), ("", HOST.names()), ("avx2,fma,sse9,avx1024", ("avx2", "fma")),
])
def test_mask_keeps_only_named_features(spec: str, kept: tuple[str, ...]) -> None:
    """The mask keeps what it names and the CPU has; an unknown name adds nothing."""
    masked = HOST.masked(spec)
    assert masked.names() == kept
    assert set(masked.hidden) == set(HOST.names()) - set(kept)


@given(host=st.builds(qd.CpuFeatures, avx2=st.booleans(), fma=st.booleans(), avx512=st.booleans(), avx512_bf16=st.booleans(),
                      amx=st.booleans()),
       names=st.lists(st.sampled_from([*FEATURE_NAMES, "none", "native", "bogus", ""]), max_size=6))
def test_mask_never_adds_a_feature(host: qd.CpuFeatures, names: list[str]) -> None:
    """Whatever the text, a masked CPU's features are a subset of the host's, and masking twice
    with the same text changes nothing more."""
    spec = ",".join(names)
    once = host.masked(spec)
    assert set(once.names()) <= set(host.names())
    assert once.masked(spec).names() == once.names()
    assert not (once.native_bf16 and not host.native_bf16) and not (once.vector_int4 and not host.vector_int4)


def test_mask_from_the_environment_reaches_probe_and_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """QUANTDISPATCH_CPU_FEATURES masks what probe() reports, per call; the summary says so."""
    from quantdispatch.probing import cpu_features

    monkeypatch.setattr("quantdispatch.probing.host_cpu_features", lambda: HOST)
    monkeypatch.setenv(MASK_VARIABLE, "avx2,fma")
    env = qd.probe(devices=False)
    cpu = env.devices[0]
    assert isinstance(cpu, qd.Cpu) and cpu.features.names() == ("avx2", "fma") and not cpu.features.native_bf16
    line = env.summary().splitlines()[-1]
    assert "masked by QUANTDISPATCH_CPU_FEATURES='avx2,fma'" in line and "hiding avx512f, avx512_bf16, amx_bf16" in line
    monkeypatch.setenv(MASK_VARIABLE, "none\x1b[2J")
    line = qd.probe(devices=False).summary().splitlines()[-1]
    assert "\x1b" not in line and "no SIMD features known" in line  # the mask's text is shown escaped
    monkeypatch.delenv(MASK_VARIABLE)
    assert cpu_features() == HOST  # no mask: the host as probed


def test_a_mask_changes_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan of a 4-bit GPTQ config on the CPU follows the masked features: bf16 with native
    bf16, float32 without; the native int4 kernel only where AVX2+FMA are left."""
    gptq = qd.Gptq(bits=4, group_size=128)
    monkeypatch.setattr("quantdispatch.probing.host_cpu_features", lambda: HOST)
    picked = {}
    for spec in ("native", "avx2,fma", "none"):
        monkeypatch.setenv(MASK_VARIABLE, spec)
        p = qd.plan(gptq, qd.probe(devices=False), qd.LoadOptions(device="cpu")).unwrap()
        picked[spec] = (p.backend.name, p.dtype.value)
    assert picked["native"][1] == "bfloat16" and picked["avx2,fma"][1] == "float32" and picked["none"][1] == "float32"
    assert picked["none"][0] == "torch-packed"  # the portable kernel with no SIMD features
    assert picked["avx2,fma"][0] != picked["none"][0]
