"""The cffi declarations in hal_amdgpu.hsa against the real ROCr headers (compiled probe)."""

import os
import shutil
import subprocess

import pytest
from hal_amdgpu.aql_packets import BARRIER_DTYPE, BARRIER_VALUE_DTYPE, KERNEL_DISPATCH_DTYPE
from hal_amdgpu.hsa_cdef import ffi

HEADERS = "/usr/include/hsa/hsa.h"
COMPILER = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang-15")

CHECKS = {
    "hsa_queue_t": ["type", "features", "base_address", "doorbell_signal", "size", "id"],
    "amd_queue_t": [
        "hsa_queue",
        "write_dispatch_id",
        "read_dispatch_id",
        "read_dispatch_id_field_base_byte_offset",
        "scratch_resource_descriptor",
        "queue_properties",
        "queue_inactive_signal",
    ],
    "amd_signal_t": [
        "kind",
        "value",
        "event_mailbox_ptr",
        "event_id",
        "start_ts",
        "end_ts",
        "queue_ptr",
    ],
    "hsa_kernel_dispatch_packet_t": [
        "header",
        "setup",
        "workgroup_size_x",
        "grid_size_x",
        "private_segment_size",
        "group_segment_size",
        "kernel_object",
        "kernarg_address",
        "completion_signal",
    ],
    "hsa_barrier_and_packet_t": ["dep_signal", "completion_signal"],
    "hsa_barrier_or_packet_t": ["dep_signal", "completion_signal"],
    "hsa_amd_barrier_value_packet_t": ["signal", "value", "mask", "cond", "completion_signal"],
    "hsa_amd_memory_pool_link_info_t": [
        "min_latency",
        "max_bandwidth",
        "atomic_support_32bit",
        "coherent_support",
        "link_type",
        "numa_distance",
    ],
    "hsa_amd_hdp_flush_t": ["HDP_MEM_FLUSH_CNTL", "HDP_REG_FLUSH_CNTL"],
    "hsa_amd_pointer_info_t": [
        "size",
        "type",
        "agentBaseAddress",
        "hostBaseAddress",
        "sizeInBytes",
        "userData",
        "agentOwner",
        "global_flags",
    ],
    "hsa_ven_amd_loader_1_03_pfn_t": [
        "hsa_ven_amd_loader_executable_iterate_loaded_code_objects",
        "hsa_ven_amd_loader_loaded_code_object_get_info",
        "hsa_ven_amd_loader_iterate_executables",
    ],
}


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory):
    if not os.path.exists(HEADERS):
        pytest.skip("ROCr headers absent: apt-get install libhsa-runtime-dev")
    if COMPILER is None:
        pytest.skip("no C compiler to build the layout probe")
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        "#include <hsa/hsa.h>",
        "#include <hsa/hsa_ext_amd.h>",
        "#include <hsa/amd_hsa_queue.h>",
        "#include <hsa/amd_hsa_signal.h>",
        "#include <hsa/hsa_ven_amd_loader.h>",
        "int main(void) {",
    ]
    for struct, fields in CHECKS.items():
        lines.append(f'printf("{struct} __sizeof__ %zu\\n", sizeof({struct}));')
        for f in fields:
            lines.append(f'printf("{struct} {f} %zu\\n", offsetof({struct}, {f}));')
    lines.append("return 0; }")
    d = tmp_path_factory.mktemp("probe")
    src = d / "probe.c"
    src.write_text("\n".join(lines))
    exe = d / "probe"
    subprocess.run(
        [COMPILER, "-DAMD_INTERNAL_BUILD", "-I/usr/include", "-o", str(exe), str(src)],
        check=True,
        capture_output=True,
    )
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {tuple(line.split()[:2]): int(line.split()[2]) for line in out.splitlines()}


@pytest.mark.parametrize("struct", sorted(CHECKS))
def test_struct_matches_headers(real_layout, struct):
    assert ffi.sizeof(struct) == real_layout[(struct, "__sizeof__")]
    for field in CHECKS[struct]:
        assert ffi.offsetof(struct, field) == real_layout[(struct, field)], field


def test_packet_dtypes_match_cdef():
    assert KERNEL_DISPATCH_DTYPE.itemsize == ffi.sizeof("hsa_kernel_dispatch_packet_t") == 64
    for name in (
        "kernel_object",
        "kernarg_address",
        "completion_signal",
        "grid_size",
        "group_segment_size",
    ):
        cname = "grid_size_x" if name == "grid_size" else name
        assert KERNEL_DISPATCH_DTYPE.fields[name][1] == ffi.offsetof(
            "hsa_kernel_dispatch_packet_t", cname
        )
    assert BARRIER_DTYPE.fields["dep_signal"][1] == ffi.offsetof(
        "hsa_barrier_and_packet_t", "dep_signal"
    )
    for name in ("signal", "value", "mask", "cond", "completion_signal"):
        assert BARRIER_VALUE_DTYPE.fields[name][1] == ffi.offsetof(
            "hsa_amd_barrier_value_packet_t", name
        )
    assert ffi.offsetof("amd_queue_t", "write_dispatch_id") == 56
    assert ffi.offsetof("amd_queue_t", "read_dispatch_id") == 128
