"""Pool memory events: reserve / wait / release / materialize recorded per pool."""

import pytest
from _profiling_support import make_session

import hal_core
from hal_core.pool import AcquireResult, CpuSlabProvider, TlsfPool
from hal_core.profiling import MemoryEventType as M
from hal_core.profiling import ProfilingDataFamily as F
from hal_core.profiling import StatisticsSink, record_pool_events


def test_pool_events_round_trip():
    stats = StatisticsSink()
    s = make_session(F.MEMORY_EVENTS, [stats])
    with TlsfPool(CpuSlabProvider(), range_length=1 << 16, budget_limit=1 << 16) as pool:
        record_pool_events(s, pool, pool_id=9)
        result, r, _info = pool.acquire_reservation(4096)
        assert result in (AcquireResult.OK, AcquireResult.OK_FRESH)
        buf = pool.materialize_reservation(None, r, 1024)
        assert buf.byte_length == 1024
        too_big, none, _ = pool.acquire_reservation(1 << 16)
        assert none is None and too_big in (AcquireResult.EXHAUSTED, AcquireResult.OVER_BUDGET)
        pool.release_reservation(r)
        s.end()
        assert "acquire_reservation" not in vars(pool)  # detached at the end
        pool.acquire_reservation(16)  # plain path still works
    mem = stats.capture.records("memory-events")
    types = [M(int(t)).name for t in mem["type"]]
    assert types == ["POOL_RESERVE", "POOL_MATERIALIZE", "POOL_RESERVE", "POOL_RELEASE"]
    assert set(mem["pool_id"].tolist()) == {9}
    assert int(mem["length"][0]) >= 4096 and int(mem["length"][1]) == 1024
    assert int(mem["length"][2]) == 0 and int(mem["flags"][2]) == int(too_big)
    assert int(mem["pool_bytes_reserved"][0]) >= 4096 and int(mem["pool_bytes_reserved"][3]) == 0
    assert mem["allocation_id"][0] == mem["allocation_id"][3]


def test_pool_events_misuse():
    s = make_session(F.QUEUE_EVENTS, [StatisticsSink()])
    pool = TlsfPool(CpuSlabProvider(), range_length=1 << 16)
    with pytest.raises(hal_core.InvalidArgumentError, match="MEMORY_EVENTS"):
        record_pool_events(s, pool)
    s2 = make_session(F.MEMORY_EVENTS, [StatisticsSink()])
    record_pool_events(s2, pool)
    with pytest.raises(hal_core.FailedPreconditionError, match="already recording"):
        record_pool_events(s2, pool)
    s2.end()
    with pytest.raises(hal_core.FailedPreconditionError, match="ended"):
        record_pool_events(s2, pool)
    pool.close()
