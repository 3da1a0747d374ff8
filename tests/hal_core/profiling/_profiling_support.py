from hal_core.profiling import FunctionMetadata, ProfilingOptions, ProfilingSession


class RecordingSink:
    """Keeps every call (copies payloads, as sinks must)."""

    def __init__(self):
        self.calls = []

    def begin_session(self, metadata):
        self.calls.append(("begin", metadata))

    def write(self, metadata, payloads):
        self.calls.append(("write", metadata, b"".join(bytes(p) for p in payloads)))

    def end_session(self, metadata, status_code):
        self.calls.append(("end", metadata, status_code))

    def writes(self, kind):
        return [c for c in self.calls if c[0] == "write" and c[1].content_type.endswith("." + kind)]


def make_session(families, sinks, *, ring_capacity=1 << 12, queue_count=2, **kw):
    options = ProfilingOptions(families, sinks=sinks, ring_capacity=ring_capacity)
    s = ProfilingSession(
        options,
        options.effective_families,
        session_id=7,
        device_name="test://",
        queue_count=queue_count,
        **kw,
    )
    s.start()
    return s


def fill_synthetic(s, n=4):
    """A small synthetic workload: one executable with two functions, n dispatches."""
    s.record_executable(
        3,
        "exe",
        [
            FunctionMetadata(0, "matmul", 3, 0, (64, 1, 1)),
            FunctionMetadata(1, "add", 2, 1, (32, 1, 1)),
        ],
    )
    t = 1_000_000
    for i in range(n):
        q = i % 2
        s.record_queue_event(1, q, i + 1, 1, 1, submit_host_time_ns=t - 500)
        s.record_host_execution(1, q, i + 1, t, t + 10_000)
        s.record_dispatch(q, i + 1, 0, 3, 0, i % 2, (4, 1, 1), (64, 1, 1), t + 1000, t + 9000)
        s.record_memory_event(6, q, allocation_id=i + 1, length=256)
        t += 20_000
