"""Binary gpu_metrics fixtures written field by field at the byte offsets of the kernel's
``gpu_metrics_v1_{1,2,3}`` structs (kgd_pp_interface.h; natural C alignment), independent
of the parser's own layout tables."""

import struct

SIZES = {1: 96, 2: 104, 3: 120}
OFFSETS = {
    "temperature_edge": (4, "H"),
    "temperature_hotspot": (6, "H"),
    "temperature_mem": (8, "H"),
    "average_gfx_activity": (16, "H"),
    "average_umc_activity": (18, "H"),
    "average_socket_power": (22, "H"),
    "energy_accumulator": (24, "Q"),
    "system_clock_counter": (32, "Q"),
    "current_gfxclk": (54, "H"),
    "current_uclk": (58, "H"),
    "throttle_status": (68, "I"),
    "pcie_link_speed": (76, "H"),
    "temperature_hbm0": (88, "H"),
    "firmware_timestamp": (96, "Q"),  # v1.2+
    "voltage_gfx": (106, "H"),  # v1.3
    "indep_throttle_status": (112, "Q"),  # v1.3
}


def build(content_revision: int, values: dict, *, format_revision: int = 1, size=None) -> bytes:
    total = SIZES.get(content_revision, 96)
    buf = bytearray(b"\xff" * total)  # every field "not provided" unless set
    struct.pack_into(
        "<HBB", buf, 0, size if size is not None else total, format_revision, content_revision
    )
    for name, value in values.items():
        off, code = OFFSETS[name]
        struct.pack_into("<" + code, buf, off, value)
    return bytes(buf)
