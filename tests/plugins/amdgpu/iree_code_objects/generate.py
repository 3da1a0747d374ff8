"""Regenerate the IREE gfx1100 code objects in this directory from the ``.mlir`` sources.

Needs the pip-installed IREE compiler (``pip install iree-base-compiler``); the tests that
use the outputs do not. For each ``NAME.mlir`` it writes:

* ``NAME.hsaco``: the raw HSACO (``--iree-hal-dump-executable-binaries-to``);
* ``NAME.hip1``: IREE's ``HIP1`` container (``--iree-rocm-container-type=hip``), the
  executable as stored in the ``.vmfb`` (IREE's 64-byte file header + FlatBuffer);
* ``NAME.amd1``: the same with IREE's ``AMD1`` container (``--iree-rocm-container-type=
  amdgpu``);

and ``manifest.json`` (compiler version and flags). IREE 3.13 spells the target flag
``--iree-rocm-target`` (``--iree-hip-target`` in older releases). Usage:

    python tests/plugins/amdgpu/iree_code_objects/generate.py
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

HERE = pathlib.Path(__file__).resolve().parent
TARGET = "gfx1100"
FLAGS = ["--iree-hal-target-device=hip", f"--iree-rocm-target={TARGET}"]
CONTAINERS = {"hip1": "hip", "amd1": "amdgpu"}


def _compile(source: pathlib.Path, container: str, work: pathlib.Path) -> tuple[bytes, bytes]:
    """(container bytes from the .vmfb, raw HSACO) of the single executable of ``source``."""
    dump = work / f"dump-{source.stem}-{container}"
    vmfb = work / f"{source.stem}.{container}.vmfb"
    subprocess.run(
        [
            "iree-compile",
            str(source),
            *FLAGS,
            f"--iree-rocm-container-type={container}",
            f"--iree-hal-dump-executable-binaries-to={dump}",
            "-o",
            str(vmfb),
        ],
        check=True,
    )
    with zipfile.ZipFile(vmfb) as archive:
        entries = [n for n in archive.namelist() if n.endswith("_rocm_hsaco_fb.fb")]
        if len(entries) != 1:
            raise SystemExit(f"{source.name}: expected one executable, found {entries}")
        packed = archive.read(entries[0])
    hsacos = sorted(dump.glob("*.hsaco"))
    if len(hsacos) != 1:
        raise SystemExit(f"{source.name}: expected one dumped HSACO, found {hsacos}")
    return packed, hsacos[0].read_bytes()


def main() -> int:
    if shutil.which("iree-compile") is None:
        print("iree-compile not found: pip install iree-base-compiler", file=sys.stderr)
        return 1
    version = (
        subprocess.run(["iree-compile", "--version"], check=True, capture_output=True, text=True)
        .stdout.strip()
        .splitlines()
    )
    programs = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        for source in sorted(HERE.glob("*.mlir")):
            raw = None
            for ext, container in CONTAINERS.items():
                packed, hsaco = _compile(source, container, work)
                (HERE / f"{source.stem}.{ext}").write_bytes(packed)
                if raw is not None and raw != hsaco:
                    print(f"note: {source.name}: the two builds' HSACO differ", file=sys.stderr)
                raw = hsaco
            assert raw is not None
            (HERE / f"{source.stem}.hsaco").write_bytes(raw)
            programs[source.stem] = sorted(f"{source.stem}.{e}" for e in ("hsaco", *CONTAINERS))
    manifest = {"compiler": version, "flags": FLAGS, "programs": programs}
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {sum(len(v) for v in programs.values())} artifacts to {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
