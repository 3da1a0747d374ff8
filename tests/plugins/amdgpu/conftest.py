import pytest
from hal_amdgpu.hsa import HsaLibrary
from hal_amdgpu.soft_hsa import SoftHsaRuntime, SoftSystemConfig


@pytest.fixture
def soft_hsa():
    """An initialised soft HSA library with two gfx1100 GPUs (shut down afterwards)."""
    hsa = HsaLibrary(SoftHsaRuntime(SoftSystemConfig.default()), "soft-test", "soft")
    hsa.init()
    yield hsa
    hsa.shut_down()
