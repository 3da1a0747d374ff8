"""aqlprofile loading, counter validation and packet creation (against a small fake
library compiled from fake_aqlprofile.c; skipped without a C compiler)."""

import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest
from hal_amdgpu.aql_packets import PM4_INDIRECT_BUFFER
from hal_amdgpu.pm4_packets import COPY_SRC_GPU_CLOCK, Pm4Opcode, decode_type3
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
    assert len(packets.start) == len(packets.read) == len(packets.stop) == 64
    for raw in (packets.start, packets.stop):
        assert _run_ib(raw) == []  # NOPs only
    # the read packet's buffer copies the GPU clock into the result word; until a command
    # processor ran it, the library has no data
    with pytest.raises(hal_core.InternalError, match="aqlprofile_pmc_iterate_data"):
        lib.read_pmc(packets)
    (address,) = _run_ib(packets.read)
    ctypes.c_uint64.from_address(address).value = 12345  # what the command processor does
    assert lib.read_pmc(packets) == [(6, 4, 1004), (6, 3, 1003)]
    lib.delete_pmc_packets(packets)


def _run_ib(raw: bytes) -> list[int]:
    """Decode one of the library's AQL PM4-IB packets like the soft command processor:
    the jump must be a type-3 INDIRECT_BUFFER and its buffer real PM4 (NOPs and COPY_DATA
    of the GPU clock to memory). Returns the COPY_DATA destinations."""
    jump = np.frombuffer(raw[4:20], np.uint32)
    assert raw[2] == 1  # AMD_FORMAT PM4_IB
    assert decode_type3(int(jump[0])) == (PM4_INDIRECT_BUFFER, 3)
    assert int(jump[3]) & (1 << 23)
    address = int(jump[1]) | (int(jump[2]) << 32)
    count = int(jump[3]) & 0xFFFFF
    ib = np.frombuffer((ctypes.c_uint32 * count).from_address(address), np.uint32)
    at, copies = 0, []
    while at < count:
        opcode, body = decode_type3(int(ib[at]))
        assert opcode in (Pm4Opcode.NOP, Pm4Opcode.COPY_DATA)
        if opcode == Pm4Opcode.COPY_DATA:
            assert body == 5 and int(ib[at + 1]) & 0xF == COPY_SRC_GPU_CLOCK
            copies.append(int(ib[at + 4]) | (int(ib[at + 5]) << 32))
        at += 1 + body
    assert at == count
    return copies


def test_att_packets_and_trace_data(tmp_path):
    lib = aql.load_aqlprofile([str(_build(tmp_path, "libatt.so", "-DWITH_ATT"))], env={})
    params = [(aql.ATT_PARAMETER_SE_MASK, 1), (aql.ATT_PARAMETER_BUFFER_SIZE, 4096)]
    keep = []

    def alloc(size, _flags):
        mem = ctypes.create_string_buffer(size)
        keep.append(mem)
        return ctypes.addressof(mem), mem

    packets = lib.create_att_packets(0x77, params, alloc)
    assert _run_ib(packets.start) == []
    with pytest.raises(hal_core.InternalError, match="aqlprofile_att_iterate_data"):
        lib.read_att(packets)  # the stop packet never ran
    (address,) = _run_ib(packets.stop)
    ctypes.c_uint64.from_address(address).value = 1
    ((shader, data),) = lib.read_att(packets)
    assert shader == 0 and data[:8] == b"fake-att"
    assert np.frombuffer(data[8:16], np.uint32).tolist() == [2, 4096]
    lib.delete_att_packets(packets)
    # a library without the ATT functions cannot create trace packets
    plain = aql.load_aqlprofile([str(_build(tmp_path, "libplain.so"))], env={})
    with pytest.raises(hal_core.UnavailableError, match="no ATT thread-trace functions"):
        plain.create_att_packets(0x77, params, alloc)


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
