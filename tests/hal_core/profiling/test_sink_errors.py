"""A sink that raises stops neither the other sinks nor the session: every sink gets every
chunk and ``end_session``; the first error is raised to the flushing caller, later ones
are reported through ``sys.unraisablehook``."""

import sys

import pytest
from _profiling_support import RecordingSink, fill_synthetic, make_session

from hal_core.profiling import ProfilingDataFamily as F


class RaisingSink(RecordingSink):
    def __init__(self, fail_in=("write", "end")):
        super().__init__()
        self.fail_in = fail_in

    def begin_session(self, metadata):
        super().begin_session(metadata)
        if "begin" in self.fail_in:
            raise OSError("begin failed")

    def write(self, metadata, payloads):
        super().write(metadata, payloads)
        if "write" in self.fail_in:
            raise OSError(f"write failed: {metadata.content_type}")

    def end_session(self, metadata, status_code):
        super().end_session(metadata, status_code)
        if "end" in self.fail_in:
            raise OSError("end failed")


@pytest.fixture
def reported(monkeypatch):
    seen = []

    def hook(args):
        sys.__unraisablehook__(args)  # the default hook accepts the report
        seen.append(args.exc_value)

    monkeypatch.setattr(sys, "unraisablehook", hook)
    return seen


def test_a_raising_sink_loses_nothing_for_the_others(reported):
    bad, good = RaisingSink(), RecordingSink()
    s = make_session(F.QUEUE_EVENTS | F.DISPATCH_EVENTS | F.EXECUTABLE_METADATA, [bad, good])
    fill_synthetic(s)
    with pytest.raises(OSError, match="write failed"):
        s.flush()
    flushed = [c for c in good.calls if c[0] == "write"]
    assert len(flushed) >= 3  # queue events, dispatch events, executable metadata...
    assert [c for c in bad.calls if c[0] == "write"] == flushed  # every chunk was offered
    # The session still works: more records, another flush, the end.
    fill_synthetic(s)
    with pytest.raises(OSError, match="write failed"):
        s.end()
    assert good.calls[-1][0] == "end" and bad.calls[-1][0] == "end"
    assert good.writes("queue-events") and len(good.writes("queue-events")) == 2
    # Within one call only the first error is raised: the rest were reported.
    assert any("end failed" in str(e) for e in reported)
    assert all(isinstance(e, OSError) for e in reported)


def test_a_sink_failing_to_begin_ends_the_ones_that_began():
    first, bad = RecordingSink(), RaisingSink(fail_in=("begin",))
    with pytest.raises(OSError, match="begin failed"):
        make_session(F.QUEUE_EVENTS, [first, bad])
    assert [c[0] for c in first.calls] == ["begin", "end"]
    assert first.calls[-1][2] != 0  # ended with a failure status


def test_a_sink_raising_systemexit_does_not_break_the_status(reported):
    class Exits(RecordingSink):
        def write(self, metadata, payloads):
            raise SystemExit("sink wants out")

    good = RecordingSink()
    s = make_session(F.QUEUE_EVENTS, [Exits(), good])
    fill_synthetic(s)
    with pytest.raises(SystemExit):
        s.end()
    assert good.calls[-1][0] == "end"
