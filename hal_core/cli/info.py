"""``hal info``: plugins (with every error recorded on them), drivers with their CTS
configuration, devices with the reason when something is unavailable; ``--device URI``
describes one device; ``--topology`` prints the topology of a group."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._registry import registry
from .._status import HalError
from ._common import fail, rc_for


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="list plugins, drivers and devices; --device URI describes one device",
        description=__doc__,
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--topology", action="store_true", help="print the topology of a group of the --devices"
    )
    p.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="URI",
        help="describe this device (heaps, queues, executable formats, profiling families, "
        "CTS configuration); with --topology, a member of the group (repeatable; default "
        "local-task://)",
    )
    p.set_defaults(run=run)


def _flag_text(value: Any) -> str:
    name = getattr(value, "name", None)
    return name if name else f"0x{int(value):x}"


def _cts_entry(driver: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the driver's CTS configuration as data, the error when its plugin's was
    rejected)."""
    from ..cts.config import config_for_driver

    found = config_for_driver(driver)
    if isinstance(found, str):
        return None, found
    return (found.describe() if found is not None else None), None


def collect() -> dict[str, Any]:
    """Everything ``hal info`` shows, as plain data."""
    reg = registry()
    drivers = []
    for record in reg.driver_records():
        cts, cts_error = _cts_entry(record.name)
        entry: dict[str, Any] = {
            "name": record.name,
            "full_name": record.full_name,
            "plugin": record.plugin,
            "overrides": record.overridden,
            "available": True,
            "reason": None,
            "devices": [],
            "cts": cts,
            "cts_error": cts_error,
        }
        try:
            driver = reg.driver(record.name)
            for info in driver.query_available_devices():
                entry["devices"].append(
                    {
                        "uri": f"{record.name}://{info.path}",
                        "device_id": info.device_id,
                        "path": info.path,
                        "name": info.name,
                    }
                )
        except HalError as exc:
            entry["available"] = False
            entry["reason"] = str(exc)
        drivers.append(entry)
    # After the drivers: a driver failing its contract records that on its plugin.
    plugins = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "location": p.location,
            "loaded": p.loaded,
            "disabled": p.disabled,
            "error": p.error,
            "errors": p.errors,
        }
        for p in reg.plugins()
    ]
    from ..pool._fast_paths import describe as describe_pool_paths
    from ..profiling import describe_profilers

    return {
        "plugins": plugins,
        "drivers": drivers,
        "profilers": describe_profilers(),
        "pool_fast_paths": describe_pool_paths(),
    }


def describe_device(uri: str) -> dict[str, Any]:
    """One device as plain data: heaps, memory types, queues, executable formats,
    profiling families and its driver's CTS configuration. Raises HalError when the device
    cannot be created."""
    from .._registry import create_device
    from ..profiling import supported_families

    device = create_device(uri)
    try:
        heaps = [
            {
                "memory_type": _flag_text(h.type),
                "allowed_usage": _flag_text(h.allowed_usage),
                "max_allocation_size": h.max_allocation_size,
                "min_alignment": h.min_alignment,
            }
            for h in device.allocator.query_memory_heaps()
        ]
        cache = device.create_executable_cache("hal-info")
        formats = sorted(set(cache.formats()))
        families = supported_families(device)
        family_names = [
            m.name.lower().replace("_", "-")
            for m in type(families)
            if m and m.name and families & m
        ]
        cts, cts_error = _cts_entry(device.driver_name)
        return {
            "uri": uri,
            "driver": device.driver_name,
            "queues": device.queue_count,
            "heaps": heaps,
            "memory_types": sorted({h["memory_type"] for h in heaps}),
            "executable_formats": formats,
            "profiling_families": family_names,
            "cts": cts,
            "cts_error": cts_error,
        }
    finally:
        device.close()


def _print_cts(cts: dict[str, Any] | None, error: str | None, indent: str) -> None:
    if error:
        print(f"{indent}CTS: REJECTED: {error}")
    elif cts is None:
        print(f"{indent}CTS: no configuration (untagged: tests gated by a tag skip)")
    else:
        tags = ",".join(cts["tags"]) or "none"
        formats = ",".join(cts["executable_formats"]) or "none"
        print(f"{indent}CTS: {cts['uri']} tags={tags} executable formats={formats}")
        for kind in ("unsupported", "expected_failures"):
            for pattern, reason in cts[kind].items():
                print(f"{indent}  {kind.replace('_', ' ')}: {pattern}: {reason}")


def _print_device(data: dict[str, Any]) -> None:
    print(f"Device {data['uri']} (driver {data['driver']})")
    print(f"  queues: {data['queues']}")
    print("  heaps:")
    for h in data["heaps"]:
        print(
            f"    {h['memory_type']:<40} usage {h['allowed_usage']} "
            f"max allocation {h['max_allocation_size']} alignment {h['min_alignment']}"
        )
    print(f"  memory types: {', '.join(data['memory_types']) or 'none'}")
    print(f"  executable formats: {', '.join(data['executable_formats']) or 'none'}")
    print(f"  profiling families: {', '.join(data['profiling_families']) or 'none'}")
    _print_cts(data["cts"], data["cts_error"], "  ")


def run(args: argparse.Namespace) -> int:
    if args.topology:
        return run_topology(args.device or ["local-task://"], as_json=args.json)
    if args.device:
        described = []
        for uri in args.device:
            try:
                described.append(describe_device(uri))
            except HalError as exc:
                return fail("info", f"cannot open device {uri!r}: {exc}", rc_for(exc))
        if args.json:
            print(json.dumps(described[0] if len(described) == 1 else described, indent=2))
        else:
            for data in described:
                _print_device(data)
        return 0
    data = collect()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print("Plugins:")
    for p in data["plugins"]:
        dist = (
            f"{p['distribution']} {p['version']}" if p["distribution"] else "(registered by hand)"
        )
        if p["disabled"]:
            state = "disabled (HAL_PLUGINS / HAL_DISABLE_PLUGINS)"
        elif not p["loaded"]:
            state = "NOT LOADED"
        else:
            state = "loaded" if not p["errors"] else "loaded, WITH ERRORS"
        print(f"  {p['name']:<16} {dist:<28} {p['location'] or '':<28} {state}")
        for error in p["errors"]:
            print(f"    error: {error}")
    print("Drivers:")
    for d in data["drivers"]:
        over = f" (overrides {', '.join(d['overrides'])})" if d["overrides"] else ""
        print(f"  {d['name']:<16} {d['full_name']} [plugin {d['plugin']}]{over}")
        if not d["available"]:
            print(f"    unavailable: {d['reason']}")
        for dev in d["devices"]:
            print(f"    {dev['uri']:<40} {dev['name']}")
        _print_cts(d["cts"], d["cts_error"], "    ")
    print("Profilers:")
    for p in data["profilers"]:
        needs = f" (needs {p['data_families']})" if p["data_families"] else ""
        print(f"  {p['name']:<16} [plugin {p['plugin']}] {p['description']}{needs}")
    print(f"Pool fast paths: {data['pool_fast_paths']}")
    return 0


def run_topology(uris: list[str], as_json: bool = False) -> int:
    """``hal info --topology``: open the devices as one group and print its matrix."""
    from .._device_group import create_device_group
    from .._topology import format_topology, topology_as_dict

    try:
        with create_device_group(uris) as group:
            if as_json:
                print(json.dumps(topology_as_dict(group), indent=2))
            else:
                print(format_topology(group))
    except HalError as exc:
        return fail("info", f"cannot build a device group of {uris}: {exc}", rc_for(exc))
    return 0
