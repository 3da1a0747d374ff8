"""``hal info``: plugins, drivers and devices, with the reason when something is unavailable."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._registry import registry
from .._status import HalError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="list plugins, drivers and devices")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--topology", action="store_true", help="print the topology of a group of the --devices"
    )
    p.add_argument(
        "--device", action="append", default=[], metavar="URI",
        help="a device of the --topology group (repeatable; default local-task://)",
    )
    p.set_defaults(run=run)


def collect() -> dict[str, Any]:
    """Everything ``hal info`` shows, as plain data."""
    reg = registry()
    plugins = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "location": p.location,
            "loaded": p.loaded,
            "error": p.error,
        }
        for p in reg.plugins()
    ]
    drivers = []
    for record in reg.driver_records():
        entry: dict[str, Any] = {
            "name": record.name,
            "full_name": record.full_name,
            "plugin": record.plugin,
            "overrides": record.overridden,
            "available": True,
            "reason": None,
            "devices": [],
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
    from ..pool._fast_paths import describe as describe_pool_paths
    from ..profiling import describe_profilers

    return {
        "plugins": plugins,
        "drivers": drivers,
        "profilers": describe_profilers(),
        "pool_fast_paths": describe_pool_paths(),
    }


def run(args: argparse.Namespace) -> int:
    if args.topology:
        return run_topology(args.device or ["local-task://"], as_json=args.json)
    data = collect()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print("Plugins:")
    for p in data["plugins"]:
        dist = (
            f"{p['distribution']} {p['version']}" if p["distribution"] else "(registered by hand)"
        )
        state = "loaded" if p["loaded"] else f"NOT LOADED: {p['error']}"
        print(f"  {p['name']:<16} {dist:<28} {p['location'] or '':<28} {state}")
    print("Drivers:")
    for d in data["drivers"]:
        over = f" (overrides {', '.join(d['overrides'])})" if d["overrides"] else ""
        print(f"  {d['name']:<16} {d['full_name']} [plugin {d['plugin']}]{over}")
        if not d["available"]:
            print(f"    unavailable: {d['reason']}")
        for dev in d["devices"]:
            print(f"    {dev['uri']:<40} {dev['name']}")
    print("Profilers:")
    for p in data["profilers"]:
        needs = f" (needs {p['data_families']})" if p["data_families"] else ""
        print(f"  {p['name']:<16} [plugin {p['plugin']}] {p['description']}{needs}")
    print(f"Pool fast paths: {data['pool_fast_paths']}")
    return 0


def run_topology(uris: list[str], as_json: bool = False) -> int:
    """``hal info --topology``: open the devices as one group and print its matrix."""
    import sys

    from .._device_group import create_device_group, format_topology, topology_as_dict

    try:
        with create_device_group(uris) as group:
            if as_json:
                print(json.dumps(topology_as_dict(group), indent=2))
            else:
                print(format_topology(group))
    except HalError as exc:
        print(f"hal info: cannot build a device group of {uris}: {exc}", file=sys.stderr)
        return 2
    return 0
