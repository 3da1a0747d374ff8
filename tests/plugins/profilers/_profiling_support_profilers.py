from hal_core.profiling import ProfilingOptions, ProfilingSession


def make_session(families, sinks):
    options = ProfilingOptions(families, sinks=sinks)
    s = ProfilingSession(options, families, session_id=1, device_name="test://", queue_count=1)
    s.start()
    return s
