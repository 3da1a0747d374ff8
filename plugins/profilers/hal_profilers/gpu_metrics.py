"""Parser of the amdgpu ``gpu_metrics`` sysfs blob (formats 1.1 to 1.3).

The blob starts with a 4-byte header ``{u16 structure_size, u8 format_revision,
u8 content_revision}`` followed by the ``gpu_metrics_v<format>_<content>`` struct of the
Linux kernel (``drivers/gpu/drm/amd/include/kgd_pp_interface.h``). Layouts below are
the natural C layouts of those structs (explicit ``x`` pad bytes where C aligns). Units
in the blob: temperatures in degrees Celsius, activity in percent, power in watts,
clocks in MHz; ``0xFFFF`` (and all-ones wider fields) means "not provided".
"""

from __future__ import annotations

import struct
from typing import Any

import attrs

from hal_core import DataLossError, InvalidArgumentError, UnimplementedError

__all__ = ["GpuMetricsHeader", "GpuMetrics", "parse_gpu_metrics", "SUPPORTED_REVISIONS", "LAYOUTS"]

HEADER = struct.Struct("<HBB")

_V1_1_FIELDS = [
    ("temperature_edge", "H"),
    ("temperature_hotspot", "H"),
    ("temperature_mem", "H"),
    ("temperature_vrgfx", "H"),
    ("temperature_vrsoc", "H"),
    ("temperature_vrmem", "H"),
    ("average_gfx_activity", "H"),
    ("average_umc_activity", "H"),
    ("average_mm_activity", "H"),
    ("average_socket_power", "H"),
    ("energy_accumulator", "Q"),
    ("system_clock_counter", "Q"),
    ("average_gfxclk_frequency", "H"),
    ("average_socclk_frequency", "H"),
    ("average_uclk_frequency", "H"),
    ("average_vclk0_frequency", "H"),
    ("average_dclk0_frequency", "H"),
    ("average_vclk1_frequency", "H"),
    ("average_dclk1_frequency", "H"),
    ("current_gfxclk", "H"),
    ("current_socclk", "H"),
    ("current_uclk", "H"),
    ("current_vclk0", "H"),
    ("current_dclk0", "H"),
    ("current_vclk1", "H"),
    ("current_dclk1", "H"),
    ("throttle_status", "I"),
    ("current_fan_speed", "H"),
    ("pcie_link_width", "H"),
    ("pcie_link_speed", "H"),
    ("padding", "H"),
    ("gfx_activity_acc", "I"),
    ("mem_activity_acc", "I"),
    ("temperature_hbm", "4H"),
]
_V1_2_FIELDS = _V1_1_FIELDS + [("firmware_timestamp", "Q")]
_V1_3_FIELDS = _V1_2_FIELDS + [
    ("voltage_soc", "H"),
    ("voltage_gfx", "H"),
    ("voltage_mem", "H"),
    ("padding1", "H"),
    ("indep_throttle_status", "Q"),
]


def _layout(fields: list[tuple[str, str]]) -> tuple[struct.Struct, list[tuple[str, int]]]:
    """A little-endian struct with C alignment padding made explicit, after the header."""
    fmt = "<"
    offset = HEADER.size
    names: list[tuple[str, int]] = []
    for name, code in fields:
        count = int(code[:-1]) if len(code) > 1 else 1
        size = struct.calcsize("<" + code[-1])
        pad = -offset % size
        fmt += "x" * pad
        offset += pad
        fmt += code
        offset += size * count
        names.append((name, count))
    fmt += "x" * (-offset % 8)  # the structs hold u64 members: 8-byte aligned size
    return struct.Struct(fmt), names


LAYOUTS: dict[tuple[int, int], tuple[struct.Struct, list[tuple[str, int]]]] = {
    (1, 1): _layout(_V1_1_FIELDS),
    (1, 2): _layout(_V1_2_FIELDS),
    (1, 3): _layout(_V1_3_FIELDS),
}
SUPPORTED_REVISIONS = tuple(sorted(LAYOUTS))


@attrs.frozen
class GpuMetricsHeader:
    structure_size: int
    format_revision: int
    content_revision: int


@attrs.frozen
class GpuMetrics:
    """A parsed blob. ``fields`` maps the kernel's field names to raw values (blob units);
    the accessors return SI-ish HAL units or None when the field is not provided."""

    header: GpuMetricsHeader
    fields: dict[str, Any]

    def _u16(self, name: str) -> int | None:
        v = self.fields.get(name)
        return None if v is None or v == 0xFFFF else int(v)

    def temperature_millidegrees(self, which: str) -> int | None:
        v = self._u16(f"temperature_{which}")
        return None if v is None else v * 1000

    def activity_millipercent(self, which: str) -> int | None:
        v = self._u16(f"average_{which}_activity")
        return None if v is None else v * 1000

    def socket_power_microwatts(self) -> int | None:
        v = self._u16("average_socket_power")
        return None if v is None else v * 1_000_000

    def clock_hertz(self, name: str) -> int | None:
        v = self._u16(f"current_{name}")
        return None if v is None else v * 1_000_000

    def throttle_status(self) -> int | None:
        """ASIC-independent throttle bits (v1.3) when present, else the ASIC-specific."""
        v = self.fields.get("indep_throttle_status")
        if v is not None and v != 0xFFFFFFFFFFFFFFFF:
            return int(v)
        v = self.fields.get("throttle_status")
        return None if v is None or v == 0xFFFFFFFF else int(v)


def parse_header(data: bytes) -> GpuMetricsHeader:
    if len(data) < HEADER.size:
        raise DataLossError(
            f"gpu_metrics blob has {len(data)} bytes; the header alone needs {HEADER.size}"
        )
    return GpuMetricsHeader(*HEADER.unpack_from(data))


def parse_gpu_metrics(data: bytes) -> GpuMetrics:
    """Parse a blob. UNIMPLEMENTED for revisions other than 1.1-1.3 (naming the revision);
    DATA_LOSS when the blob is shorter than its header or layout says."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(f"gpu_metrics must be bytes, got {type(data).__name__}")
    data = bytes(data)
    header = parse_header(data)
    key = (header.format_revision, header.content_revision)
    layout = LAYOUTS.get(key)
    if layout is None:
        raise UnimplementedError(
            f"gpu_metrics format {key[0]}.{key[1]} is not parsed (supported: "
            + ", ".join(f"{a}.{b}" for a, b in SUPPORTED_REVISIONS)
            + "); its metrics come from the other sysfs files instead"
        )
    st, names = layout
    total = HEADER.size + st.size
    if header.structure_size < total or len(data) < total:
        raise DataLossError(
            f"gpu_metrics {key[0]}.{key[1]} needs {total} bytes; header says "
            f"{header.structure_size} and the blob has {len(data)}"
        )
    values = st.unpack_from(data, HEADER.size)
    fields: dict[str, Any] = {}
    i = 0
    for name, count in names:
        if count == 1:
            fields[name] = values[i]
        else:
            fields[name] = tuple(values[i : i + count])
        i += count
    return GpuMetrics(header, fields)
