"""aqlprofile loading, counter validation and packet creation (against a small fake
library compiled from fake_aqlprofile.c; skipped without a C compiler)."""

import os
import shutil
import subprocess

import pytest
from hal_profilers import aqlprofile as aql

import hal_core
from hal_core.profiling import CounterSet, ProfilingOptions, StatisticsSink
from hal_core.profiling import ProfilingDataFamily as F

HERE = os.path.dirname(__file__)
GFX11 = aql.AgentInfo("gfx1100", cu_num=48)
GFX9 = aql.AgentInfo("gfx90a", cu_num=9)


def _build(tmp_path, name="libhsa-amd-aqlprofile64.so.1", *flags):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the fake aqlprofile library")
    out = tmp_path / name
    subprocess.run(
        [
            cc,
            "-shared",
            "-fPIC",
            "-O0",
            *flags,
            "-o",
            str(out),
            os.path.join(HERE, "fake_aqlprofile.c"),
        ],
        check=True,
    )
    return out


def _options(*counters, families=F.COUNTER_SAMPLES):
    return ProfilingOptions(
        families,
        sinks=[StatisticsSink()],
        counter_sets=[CounterSet("set", counters)] if counters else (),
    )


def test_missing_library_is_unavailable_and_names_the_search(tmp_path):
    env = {aql.ENV_PATH: str(tmp_path / "envdir")}
    (tmp_path / "envdir").mkdir()
    with pytest.raises(hal_core.UnavailableError) as info:
        aql.check_profiling_options(
            _options("SQ_WAVES"),
            GFX11,
            paths=[str(tmp_path / "x.so")],
            libhsa_path=str(tmp_path / "rocm" / "libhsa-runtime64.so.1"),
            env=env,
        )
    msg = str(info.value)
    assert str(tmp_path / "x.so") in msg
    assert str(tmp_path / "envdir" / "libhsa-amd-aqlprofile64.so.1") in msg
    assert str(tmp_path / "rocm" / "libhsa-amd-aqlprofile64.so.1") in msg
    assert aql.ENV_PATH in msg


def test_no_counter_family_needs_no_library():
    opts = ProfilingOptions(F.QUEUE_EVENTS, sinks=[StatisticsSink()])
    assert aql.check_profiling_options(opts, GFX11, env={}) is None


def test_counter_names_are_checked_before_loading():
    with pytest.raises(hal_core.NotFoundError, match="'SQ_NOPE'.*SQ_BUSY_CYCLES"):
        aql.check_profiling_options(_options("SQ_NOPE"), GFX11, env={})
    with pytest.raises(hal_core.UnimplementedError, match="SQ_WAVES_32.*gfx10\\+"):
        aql.check_profiling_options(_options("SQ_WAVES_32"), GFX9, env={})
    with pytest.raises(hal_core.InvalidArgumentError, match="gfxip"):
        aql.resolve_counter_sets([CounterSet("s", ["SQ_WAVES"])], aql.AgentInfo("banana"))


def test_load_by_env_directory_validate_and_packets(tmp_path):
    lib_path = _build(tmp_path)
    lib = aql.check_profiling_options(
        _options("SQ_WAVES", "SQ_BUSY_CYCLES"), GFX11, env={aql.ENV_PATH: str(tmp_path)}
    )
    assert lib.path == str(lib_path) and lib.version == (1, 2, 3) and not lib.has_att
    with pytest.raises(hal_core.UnimplementedError, match="rejects counter 'SQ_BUSY_CYCLES'"):
        aql.check_profiling_options(_options("SQ_BUSY_CYCLES"), GFX9, paths=[str(lib_path)], env={})
    specs = [aql.BUILTIN_COUNTERS["SQ_WAVES"], aql.BUILTIN_COUNTERS["SQ_BUSY_CYCLES"]]
    packets = lib.create_pmc_packets(GFX11, specs)
    assert (packets.start[0], packets.stop[0], packets.read[0]) == (1, 2, 3)
    assert len(packets.start) == len(packets.read) == 64
    assert lib.read_pmc(packets) == [(6, 4, 1004), (6, 3, 1003)]
    lib.delete_pmc_packets(packets)


def test_traces_need_att_symbols(tmp_path):
    plain = _build(tmp_path / "a" if (tmp_path / "a").mkdir() is None else tmp_path)
    opts = ProfilingOptions(F.EXECUTABLE_TRACES, sinks=[StatisticsSink()])
    with pytest.raises(hal_core.UnavailableError, match="no ATT thread-trace functions"):
        aql.check_profiling_options(opts, GFX11, paths=[str(plain)], env={})
    (tmp_path / "b").mkdir()
    att = _build(tmp_path / "b", "libhsa-amd-aqlprofile64.so.1", "-DWITH_ATT")
    assert aql.check_profiling_options(opts, GFX11, paths=[str(att)], env={}).has_att


def test_other_major_is_incompatible(tmp_path):
    lib = _build(tmp_path, "libaql2.so", "-DFAKE_MAJOR=2")
    with pytest.raises(hal_core.IncompatibleError, match="version 2.2.3.*major version 1"):
        aql.load_aqlprofile([str(lib)], env={})


def test_found_beside_libhsa(tmp_path):
    rocm = tmp_path / "rocm"
    rocm.mkdir()
    lib = _build(rocm)
    loaded = aql.load_aqlprofile(libhsa_path=str(rocm / "libhsa-runtime64.so.1"), env={})
    assert loaded.path == str(lib)
