"""The real Debian ROCr library on a machine without /dev/kfd."""

import os

import pytest
from hal_amdgpu.hsa import LIBHSA_ENV, HsaLibrary, candidate_paths, load_libhsa

import hal_core
from hal_core import StatusCode, UnavailableError

needs_rocr = pytest.mark.skipif(
    not any(
        os.path.exists(os.path.join(d, "libhsa-runtime64.so.1"))
        for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/opt/rocm/lib")
    ),
    reason="libhsa-runtime64-1 is not installed (apt-get install libhsa-runtime64-1)",
)
no_kfd = pytest.mark.skipif(os.path.exists("/dev/kfd"), reason="this machine has /dev/kfd")


@needs_rocr
@no_kfd
def test_create_device_unavailable_names_library_status_and_fix():
    with pytest.raises(UnavailableError) as info:
        hal_core.create_device("amdgpu://")
    msg = str(info.value)
    assert "libhsa-runtime64" in msg and "HSA_STATUS_ERROR" in msg
    assert "/dev/kfd" in msg and "hsa=soft" in msg


@needs_rocr
@no_kfd
def test_query_available_devices_gives_reason():
    driver = hal_core.registry().driver("amdgpu")
    with pytest.raises(UnavailableError, match="hsa_init failed"):
        driver.query_available_devices()


def test_loader_lists_every_path_tried(tmp_path, monkeypatch):
    monkeypatch.setenv(LIBHSA_ENV, str(tmp_path))
    paths = candidate_paths([str(tmp_path / "nope.so.1")])
    assert paths[0].endswith("nope.so.1")
    assert paths[1] == str(tmp_path / "libhsa-runtime64.so.1")
    assert paths[-2:] == ["libhsa-runtime64.so.1", "libhsa-runtime64.so"]
    monkeypatch.setattr("hal_amdgpu.hsa.LIBHSA_NAMES", ("libdefinitely-not-hsa.so.9",))
    with pytest.raises(UnavailableError) as info:
        load_libhsa([str(tmp_path / "nope.so.1")])
    assert "nope.so.1" in str(info.value) and str(tmp_path) in str(info.value)


@needs_rocr
def test_check_maps_status_with_hsa_text():
    hsa = HsaLibrary.open_rocr()
    with pytest.raises(hal_core.HalError) as info:
        hsa.check(0x1008, "hsa_fake_call")
    assert info.value.code == StatusCode.RESOURCE_EXHAUSTED
    assert "HSA_STATUS_ERROR_OUT_OF_RESOURCES" in str(info.value)
    assert "hsa_fake_call" in str(info.value)
