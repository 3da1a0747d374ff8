"""KFD clock counters: ioctl encoding, absent device, a sample through an injected ioctl."""

import struct

import pytest
from hal_profilers.kfd import GET_CLOCK_COUNTERS, KfdClockCounters, record_clock_correlation

import hal_core
from hal_core.profiling import ClockDomain, ProfilingOptions, ProfilingSession, StatisticsSink
from hal_core.profiling import ProfilingDataFamily as F


def test_ioctl_number_matches_linux_encoding():
    # _IOWR('K', 0x05, 40-byte args): dir=3, size=40, type='K', nr=5
    assert GET_CLOCK_COUNTERS == 0xC0284B05


def test_absent_kfd_is_unavailable(tmp_path):
    with pytest.raises(hal_core.UnavailableError, match="does not exist.*amdgpu kernel driver"):
        KfdClockCounters(str(tmp_path / "kfd"))


def test_sample_through_injected_ioctl(tmp_path):
    dev = tmp_path / "kfd"
    dev.write_bytes(b"")
    seen = {}

    def fake_ioctl(fd, request, buf, mutate):
        seen["request"] = request
        seen["gpu_id"] = struct.unpack_from("<I", buf, 32)[0]
        struct.pack_into("<QQQQ", buf, 0, 111, 222, 333, 100_000_000)
        return 0

    with KfdClockCounters(str(dev), ioctl=fake_ioctl) as kfd:
        c = kfd.sample(4242)
        assert seen == {"request": GET_CLOCK_COUNTERS, "gpu_id": 4242}
        assert (c.gpu_clock_counter, c.cpu_clock_counter, c.system_clock_counter) == (111, 222, 333)
        assert c.system_clock_freq == 100_000_000
        assert c.host_time_begin_ns <= c.host_time_end_ns
        with pytest.raises(hal_core.InvalidArgumentError, match="u32"):
            kfd.sample(-1)
    kfd.close()  # idempotent
    with pytest.raises(hal_core.InvalidArgumentError, match="closed"):
        kfd.sample(1)


def test_failing_ioctl_is_unavailable(tmp_path):
    dev = tmp_path / "kfd"
    dev.write_bytes(b"")

    def fail(fd, request, buf, mutate):
        raise OSError(22, "Invalid argument")

    with KfdClockCounters(str(dev), ioctl=fail) as kfd:
        with pytest.raises(hal_core.UnavailableError, match="gpu_id 7 failed: Invalid argument"):
            kfd.sample(7)


def test_correlations_map_device_ticks_to_host_time(tmp_path):
    dev = tmp_path / "kfd"
    dev.write_bytes(b"")
    ticks = iter([1_000, 101_000])  # a 100 MHz GPU clock: 100_000 ticks = 1 ms

    def fake_ioctl(fd, request, buf, mutate):
        struct.pack_into("<QQQQ", buf, 0, next(ticks), 0, 0, 100_000_000)

    stats = StatisticsSink()
    options = ProfilingOptions(F.QUEUE_EVENTS, sinks=[stats])
    s = ProfilingSession(
        options,
        F.QUEUE_EVENTS,
        session_id=3,
        device_name="gpu",
        queue_count=1,
        clock_domain=ClockDomain.DEVICE_TICKS,
        tick_frequency_hz=100_000_000,
    )
    s.start()
    with KfdClockCounters(str(dev), ioctl=fake_ioctl) as kfd:
        a = record_clock_correlation(s, kfd, 1)
        b = record_clock_correlation(s, kfd, 1)
    s.end()
    clock = stats.capture.clock
    mid_a = (a.host_time_begin_ns + a.host_time_end_ns) / 2
    mid_b = (b.host_time_begin_ns + b.host_time_end_ns) / 2
    assert clock.to_host_ns(0, 1_000) == pytest.approx(mid_a, abs=1)
    assert clock.to_host_ns(0, 101_000) == pytest.approx(mid_b, abs=1)
    assert len(stats.capture.records("clock-correlations")) == 2
