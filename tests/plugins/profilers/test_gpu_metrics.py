"""gpu_metrics parser against binary fixtures built from the kernel struct layouts."""

import contextlib

import pytest
from _gpu_metrics_fixtures import SIZES, build
from hal_profilers.gpu_metrics import LAYOUTS, parse_gpu_metrics
from hypothesis import given, settings
from hypothesis import strategies as st

import hal_core


@pytest.mark.parametrize("rev", [1, 2, 3])
def test_layout_sizes_match_kernel_structs(rev):
    st_, _ = LAYOUTS[(1, rev)]
    assert st_.size + 4 == SIZES[rev]


@pytest.mark.parametrize("rev", [1, 2, 3])
def test_fields_and_units(rev):
    values = dict(
        temperature_edge=45,
        temperature_hotspot=61,
        temperature_mem=70,
        average_gfx_activity=37,
        average_umc_activity=12,
        average_socket_power=220,
        current_gfxclk=2100,
        current_uclk=1200,
        throttle_status=0x5,
        energy_accumulator=123456789,
        pcie_link_speed=160,
        temperature_hbm0=55,
    )
    if rev >= 2:
        values["firmware_timestamp"] = 987654321
    if rev >= 3:
        values["indep_throttle_status"] = 1 << 40
        values["voltage_gfx"] = 850
    g = parse_gpu_metrics(build(rev, values))
    assert (g.header.format_revision, g.header.content_revision) == (1, rev)
    assert g.temperature_millidegrees("edge") == 45_000
    assert g.temperature_millidegrees("hotspot") == 61_000
    assert g.temperature_millidegrees("mem") == 70_000
    assert g.activity_millipercent("gfx") == 37_000
    assert g.activity_millipercent("umc") == 12_000
    assert g.socket_power_microwatts() == 220_000_000
    assert g.clock_hertz("gfxclk") == 2_100_000_000
    assert g.clock_hertz("uclk") == 1_200_000_000
    assert g.fields["energy_accumulator"] == 123456789
    assert g.fields["pcie_link_speed"] == 160
    assert g.fields["temperature_hbm"][0] == 55
    if rev >= 2:
        assert g.fields["firmware_timestamp"] == 987654321
    if rev >= 3:
        assert g.fields["voltage_gfx"] == 850
        assert g.throttle_status() == 1 << 40  # the ASIC-independent bits win
    else:
        assert g.throttle_status() == 0x5


def test_not_provided_fields_are_none():
    g = parse_gpu_metrics(build(3, {"temperature_edge": 40}))
    assert g.temperature_millidegrees("edge") == 40_000
    assert g.temperature_millidegrees("hotspot") is None
    assert g.socket_power_microwatts() is None
    assert g.throttle_status() is None


@pytest.mark.parametrize("fmt, rev", [(1, 0), (1, 4), (2, 1), (3, 0)])
def test_other_revisions_are_unimplemented(fmt, rev):
    with pytest.raises(
        hal_core.UnimplementedError, match=f"format {fmt}.{rev} is not parsed.*1.1, 1.2, 1.3"
    ):
        parse_gpu_metrics(build(rev, {}, format_revision=fmt))


def test_short_blobs_are_data_loss():
    with pytest.raises(hal_core.DataLossError, match="header alone"):
        parse_gpu_metrics(b"\x01")
    with pytest.raises(hal_core.DataLossError, match="needs 120 bytes"):
        parse_gpu_metrics(build(3, {})[:100])
    with pytest.raises(hal_core.DataLossError, match="header says 50"):
        parse_gpu_metrics(build(3, {}, size=50))
    with pytest.raises(hal_core.InvalidArgumentError, match="must be bytes"):
        parse_gpu_metrics("text")


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=160))
def test_arbitrary_bytes_never_crash(data):
    # DATA_LOSS and UNIMPLEMENTED are the answers allowed; anything else fails.
    with contextlib.suppress(hal_core.DataLossError, hal_core.UnimplementedError):
        parse_gpu_metrics(data)
