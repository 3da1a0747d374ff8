"""Host queue ring defaults are IREE's (64 Ki AQL packets, 16 MiB of kernargs per queue),
and fit the GPU: the default AQL ring shrinks to a GPU whose HSA queues hold fewer
packets, while a capacity given in the URI that does not fit is INVALID_ARGUMENT."""

from __future__ import annotations

import attrs
import pytest
from hal_amdgpu.agents import discover_agents
from hal_amdgpu.device import AmdgpuDeviceBackend
from hal_amdgpu.hsa import HsaLibrary
from hal_amdgpu.queue_options import HostQueueOptions
from hal_amdgpu.soft_hsa import SoftHsaRuntime, SoftSystemConfig

import hal_core


def test_defaults_are_irees_sizes():
    options = HostQueueOptions()
    assert (options.aql_capacity, options.kernarg_capacity) == (1 << 16, 16 << 20)
    with hal_core.create_device("amdgpu://0?hsa=soft") as device:
        assert device.backend.gpus[0].queue_max_size == 1 << 17  # HSA_AGENT_INFO_QUEUE_MAX_SIZE
        assert device.backend.queue_options == options
        sem = device.create_semaphore(0)
        device.queue_barrier(signal=[(sem, 1)])
        sem.wait(1, 30.0)
        queues = device.backend._host_queue_set.queues
        assert all(q.ring.capacity == 1 << 16 for q in queues)


def _small_queue_backend(options: HostQueueOptions) -> AmdgpuDeviceBackend:
    config = SoftSystemConfig.from_isas("gfx1100")
    agents = tuple(attrs.evolve(a, queue_max_size=6000) if a.is_gpu else a for a in config.agents)
    hsa = HsaLibrary(SoftHsaRuntime(attrs.evolve(config, agents=agents)), "soft", "soft")
    hsa.init()
    try:
        return AmdgpuDeviceBackend(hsa, discover_agents(hsa), [0], options)
    except BaseException:
        hsa.shut_down()
        raise


def test_the_default_ring_fits_a_gpu_with_smaller_queues():
    backend = _small_queue_backend(HostQueueOptions())
    try:
        assert backend.gpus[0].queue_max_size == 6000
        assert backend.queue_options.aql_capacity == 4096  # largest power of two <= 6000
        qset = backend._create_host_queues()
        assert all(q.ring.capacity == 4096 for q in qset.queues)
    finally:
        backend.close()


def test_an_explicit_ring_larger_than_the_gpus_queues_is_invalid_argument():
    with pytest.raises(hal_core.InvalidArgumentError, match="aql_capacity=8192.*6000"):
        _small_queue_backend(HostQueueOptions.from_params({"aql_capacity": "8192"}))
    # one that fits is taken as given
    backend = _small_queue_backend(HostQueueOptions.from_params({"aql_capacity": "2048"}))
    try:
        assert backend.queue_options.aql_capacity == 2048
    finally:
        backend.close()
