"""Regenerate the IREE CPU executables the local_cpu tests run (needs iree-base-compiler
and iree-base-runtime; the tests themselves need neither).

For each program ``NAME.mlir`` below:

1. ``iree-compile`` it for the generic x86-64 CPU twice, dumping the executable library:
   ``NAME.embedded.so`` (format ``embedded-elf-x86_64``) and ``NAME.system.so``
   (``system-elf-x86_64``, ``--iree-llvmcpu-link-embedded=false``);
2. run it with ``iree-run-module`` on deterministic inputs (``numpy.random.RandomState``
   with the program's seed: a frozen stream), capturing every HAL call with
   ``--device_replay_output``;
3. read the capture with ``iree-dump-replay --format=jsonl`` and write, into
   ``manifest.json``, what the tests need to issue the same dispatches: each dispatch's
   export ordinal, workgroup count, constants and bindings (as named buffers: ``inN``
   for the program's inputs, ``out`` for its result, ``tmpN`` for transients), and the
   SHA-256 of IREE's own result bytes (the tests require bit-identical results).

Run from anywhere: ``python tests/plugins/local_cpu/iree_executables/generate.py``, then
``git add -f tests/plugins/local_cpu/iree_executables/*.so`` (the repository ignores
``*.so`` build outputs; these are test data).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

PROGRAMS = {
    # name: (input shapes, seed)
    "mlp2": ([(4, 8), (8, 16), (16,), (16, 4), (4,)], 1),
    "dynamic_add": ([(37,), (37,)], 2),
    "big_fma": ([(256, 512), (256, 512), (256, 512)], 3),
}

COMPILE = [
    "iree-compile",
    "--iree-hal-target-device=local",
    "--iree-hal-local-target-device-backends=llvm-cpu",
    "--iree-llvmcpu-target-cpu=generic",
    "--iree-llvmcpu-target-triple=x86_64-unknown-linux-gnu",
]


def make_inputs(shapes: list, seed: int) -> list[np.ndarray]:
    """The program's inputs (the tests compute the same)."""
    rs = np.random.RandomState(seed)
    return [rs.standard_normal(s).astype(np.float32) for s in shapes]


def _compile(name: str, work: Path, embedded: bool) -> Path:
    dump = work / ("emb" if embedded else "sys")
    vmfb = work / f"{name}.{'embedded' if embedded else 'system'}.vmfb"
    cmd = COMPILE + [str(HERE / f"{name}.mlir"), "-o", str(vmfb)]
    cmd += [f"--iree-hal-dump-executable-binaries-to={dump}"]
    if not embedded:
        cmd += ["--iree-llvmcpu-link-embedded=false"]
    subprocess.run(cmd, check=True)
    libs = sorted(dump.glob("*.so"))
    if len(libs) != 1:
        raise SystemExit(f"{name}: expected one executable library, got {libs}")
    shutil.copyfile(libs[0], HERE / f"{name}.{'embedded' if embedded else 'system'}.so")
    return vmfb


def _records(capture: Path) -> list[dict]:
    out = subprocess.run(
        ["iree-dump-replay", "--format=jsonl", str(capture)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _describe(name: str, shapes: list, vmfb: Path, work: Path, inputs: list) -> dict:
    args = []
    for k, a in enumerate(inputs):
        np.save(work / f"in{k}.npy", a)
        args.append(f"--input=@{work / f'in{k}.npy'}")
    capture = work / f"{name}.ireereplay"
    subprocess.run(
        [
            "iree-run-module",
            "--device=local-task",
            f"--module={vmfb}",
            f"--function={name}",
            *args,
            f"--device_replay_output={capture}",
            f"--output=@{work / 'out.npy'}",
        ],
        check=True,
        capture_output=True,
    )
    blob = capture.read_bytes()
    result = np.load(work / "out.npy")
    records = _records(capture)

    # Name the capture's buffers: host buffers written before the first execution are
    # the inputs (in order), the source of the final read-back copy is the result, any
    # other queue allocation a transient.
    roles: dict[int, str] = {}
    inputs_seen = 0
    transients = 0
    table: list[int] = []
    dispatches = []
    executed = False
    for r in records:
        op = r.get("operation", "")
        p = r.get("payload") or {}
        if op == "device.queue_execute":
            executed = True
        if op == "allocator.allocate_buffer" and not executed and inputs_seen < len(shapes):
            roles[r["related_object_id"]] = f"in{inputs_seen}"
            inputs_seen += 1
        elif op == "device.queue_alloca":
            roles.setdefault(r["related_object_id"], f"tmp{transients}")
            transients += 1
        elif op == "command_buffer.copy_buffer":
            roles[p["source"]["buffer_id"]] = "out"
        elif op == "device.queue_execute" and p.get("bindings") and not table:
            table = [b["buffer_id"] for b in p["bindings"]]
        elif op == "command_buffer.dispatch":
            br, cr = p["bindings_range"], p["constants_range"]
            bindings = []
            for i in range(p["binding_count"]):
                buffer_id, offset, length, slot, _r = struct.unpack_from(
                    "<QQQII", blob, br["offset"] + 32 * i
                )
                bindings.append((buffer_id, slot, offset, length))
            constants = list(struct.unpack_from(f"<{cr['length'] // 4}I", blob, cr["offset"]))
            dispatches.append(
                {
                    "ordinal": p["function_ordinal"],
                    "workgroup_count": p["workgroup_count"],
                    "constants": constants,
                    "bindings": bindings,
                }
            )
    sizes: dict[str, int] = {}
    for d in dispatches:
        named = []
        for buffer_id, slot, offset, length in d["bindings"]:
            bid = buffer_id or table[slot]
            role = roles[bid]
            named.append([role, offset, length])
            sizes[role] = max(sizes.get(role, 0), offset + length)
        d["bindings"] = named
    if sizes.get("out", 0) != result.nbytes:
        raise SystemExit(f"{name}: result buffer {sizes.get('out')} bytes, output {result.nbytes}")
    return {
        "function": name,
        "inputs": {"shapes": [list(s) for s in shapes], "seed": PROGRAMS[name][1]},
        "result": {
            "shape": list(result.shape),
            "dtype": str(result.dtype),
            "sha256": hashlib.sha256(result.tobytes()).hexdigest(),
        },
        "buffers": sizes,
        "dispatches": dispatches,
    }


def main() -> None:
    manifest = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (shapes, seed) in PROGRAMS.items():
            work = Path(tmp) / name
            work.mkdir()
            inputs = make_inputs(shapes, seed)
            described = None
            for embedded in (True, False):
                vmfb = _compile(name, work, embedded)
                d = _describe(name, shapes, vmfb, work, inputs)
                if described is not None and d != described:
                    raise SystemExit(f"{name}: the two formats were dispatched differently")
                described = d
            described["embedded"] = f"{name}.embedded.so"
            described["system"] = f"{name}.system.so"
            manifest[name] = described
            print(f"{name}: {len(described['dispatches'])} dispatches", file=sys.stderr)
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
