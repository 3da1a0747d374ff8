import pytest
from hal_amdgpu.agents import discover_agents
from hal_amdgpu.device_selection import device_id_for, select_by_id, select_by_path
from hal_amdgpu.hsa import HsaLibrary
from hal_amdgpu.soft_hsa import SoftHsaRuntime, SoftSystemConfig

from hal_core import IncompatibleError, InvalidArgumentError, NotFoundError


@pytest.fixture
def gpus():
    hsa = HsaLibrary(
        SoftHsaRuntime(SoftSystemConfig.from_isas("gfx1100,gfx1100,gfx90a")), "soft", "soft"
    )
    hsa.init()
    yield discover_agents(hsa).gpus
    hsa.shut_down()


def test_paths(gpus):
    assert select_by_path(gpus, "") == [0, 1]  # defaults: compatible with the first
    assert select_by_path(gpus, "*") == [0, 1]
    assert select_by_path(gpus, "1") == [1]
    assert select_by_path(gpus, "1,0") == [1, 0]
    assert select_by_path(gpus, "2") == [2]
    assert select_by_path(gpus, gpus[1].uuid.upper().replace("GPU-", "gpu-")) == [1]
    assert select_by_path(gpus, f"{gpus[0].uuid},1") == [0, 1]


@pytest.mark.parametrize(
    "path,error",
    [
        ("7", NotFoundError),
        ("GPU-ffff", NotFoundError),
        ("zero", InvalidArgumentError),
        ("0,,1", InvalidArgumentError),
        ("0,0", InvalidArgumentError),
        ("0,2", IncompatibleError),
    ],
)
def test_bad_paths(gpus, path, error):
    with pytest.raises(error):
        select_by_path(gpus, path)


def test_device_ids(gpus):
    assert device_id_for(2) == 4
    assert select_by_id(gpus, 0) == [0, 1]
    assert select_by_id(gpus, 0b011) == [0, 1]
    assert select_by_id(gpus, 0b100) == [2]
    with pytest.raises(NotFoundError):
        select_by_id(gpus, 0b1000)
    with pytest.raises(IncompatibleError):
        select_by_id(gpus, 0b101)
