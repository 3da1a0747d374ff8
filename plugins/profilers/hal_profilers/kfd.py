"""GPU/CPU clock counters from the KFD (``/dev/kfd``, ``AMDKFD_IOC_GET_CLOCK_COUNTERS``).

One ioctl returns the GPU clock counter together with CPU and system clock readings taken
by the kernel at the same moment; a profiling session turns such samples into
clock-correlation records (device tick vs host ns). UNAVAILABLE where ``/dev/kfd`` is
absent or cannot be opened (no amdgpu kernel driver, or no permission).
"""

from __future__ import annotations

import os
import struct
from typing import Any, Callable

import attrs

from hal_core import InvalidArgumentError, UnavailableError
from hal_core.profiling import host_time_ns

__all__ = [
    "ClockCounters",
    "KfdClockCounters",
    "GET_CLOCK_COUNTERS",
    "KFD_PATH",
    "record_clock_correlation",
]

KFD_PATH = "/dev/kfd"

# struct kfd_ioctl_get_clock_counters_args: u64 gpu_clock_counter, cpu_clock_counter,
# system_clock_counter, system_clock_freq; u32 gpu_id, pad.
_ARGS = struct.Struct("<QQQQII")


def _iowr(kind: str, nr: int, size: int) -> int:
    # Linux asm-generic ioctl encoding: dir(2 bits: read|write=3) | size(14) | type(8) | nr(8)
    return (3 << 30) | (size << 16) | (ord(kind) << 8) | nr


GET_CLOCK_COUNTERS = _iowr("K", 0x05, _ARGS.size)


@attrs.frozen
class ClockCounters:
    gpu_clock_counter: int
    cpu_clock_counter: int
    system_clock_counter: int
    system_clock_freq: int
    host_time_begin_ns: int
    host_time_end_ns: int


class KfdClockCounters:
    """An open ``/dev/kfd`` for clock sampling. ``close()`` is idempotent; a context
    manager. ``ioctl`` is injectable for tests (defaults to ``fcntl.ioctl``)."""

    def __init__(self, path: str = KFD_PATH, *, ioctl: Callable[..., Any] | None = None) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise UnavailableError(
                f"KFD clock counters need {path}, which does not exist: the amdgpu kernel "
                "driver (ROCm) is not loaded on this machine"
            ) from None
        except PermissionError:
            raise UnavailableError(
                f"cannot open {path} (permission denied); add the user to the 'render' "
                "and 'video' groups"
            ) from None
        if ioctl is None:
            import fcntl

            ioctl = fcntl.ioctl
        self._ioctl = ioctl

    def sample(self, gpu_id: int) -> ClockCounters:
        """One correlated sample for the GPU with KFD ``gpu_id``
        (``HSA_AMD_AGENT_INFO_DRIVER_UID``), bracketed by host-clock readings."""
        if self._fd is None:
            raise InvalidArgumentError(f"KFD clock counters on {self.path} are closed")
        if not 0 <= gpu_id < 1 << 32:
            raise InvalidArgumentError(f"gpu_id must be a u32, got {gpu_id}")
        buf = bytearray(_ARGS.pack(0, 0, 0, 0, gpu_id, 0))
        t0 = host_time_ns()
        try:
            self._ioctl(self._fd, GET_CLOCK_COUNTERS, buf, True)
        except OSError as exc:
            raise UnavailableError(
                f"AMDKFD_IOC_GET_CLOCK_COUNTERS on {self.path} for gpu_id {gpu_id} failed: "
                f"{exc.strerror or exc}"
            ) from None
        t1 = host_time_ns()
        gpu, cpu, system, freq, _gid, _pad = _ARGS.unpack(bytes(buf))
        return ClockCounters(gpu, cpu, system, freq, t0, t1)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> "KfdClockCounters":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record_clock_correlation(session: Any, kfd: KfdClockCounters, gpu_id: int) -> ClockCounters:
    """Take one KFD sample and record it as a clock-correlation record of ``session``
    (device tick = the GPU clock counter, host bracket around the ioctl). A device records
    one at ``profiling_begin`` and one at ``profiling_end`` (and optionally at flushes),
    so readers can fit the tick -> host-ns line. Returns the sample."""
    c = kfd.sample(gpu_id)
    session.record_clock_correlation(
        c.gpu_clock_counter,
        c.host_time_begin_ns,
        c.host_time_end_ns,
        host_cpu_timestamp_ns=c.cpu_clock_counter,
        system_timestamp=c.system_clock_counter,
        system_frequency_hz=c.system_clock_freq,
    )
    return c
