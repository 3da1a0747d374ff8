"""Building shared libraries from C sources in this package with the system C compiler.

Used for the replay loop (``replay.c``) and the CTS kernels (``kernels/cts_kernels.c``).
Outputs are cached by a hash of the sources, the compiler and its flags, so a library is
compiled once per machine; concurrent builders race harmlessly (each writes a private file
and renames it into place). Without a compiler every build raises UNAVAILABLE naming what
was looked for and how to fix it.

Environment: ``CC`` (compiler, default ``cc``), ``HAL_LOCAL_CPU_CACHE_DIR`` (cache folder,
default ``$XDG_CACHE_HOME/hal-local-cpu`` or ``~/.cache/hal-local-cpu``).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from hal_core import UnavailableError

__all__ = ["CFLAGS", "build_shared_library", "cache_dir", "find_compiler", "package_dir"]

CFLAGS = ("-shared", "-fPIC", "-O2")

_lock = threading.Lock()
_built: dict[str, Path] = {}


def package_dir() -> Path:
    return Path(__file__).resolve().parent


def find_compiler() -> list[str] | None:
    """The compiler command (``$CC`` or ``cc``), or None when it is not installed."""
    cmd = shlex.split(os.environ.get("CC", "cc")) or ["cc"]
    return cmd if shutil.which(cmd[0]) else None


def cache_dir() -> Path:
    explicit = os.environ.get("HAL_LOCAL_CPU_CACHE_DIR")
    if explicit:
        base = Path(explicit)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "hal-local-cpu"
    try:
        base.mkdir(parents=True, exist_ok=True)
        return base
    except OSError:
        fallback = Path(tempfile.gettempdir()) / f"hal-local-cpu-{os.getuid()}"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def build_shared_library(name: str, source: Path, include_dirs: tuple[Path, ...] = ()) -> Path:
    """Compile ``source`` into a cached shared library and return its path.

    Blocks while compiling (first use only). UNAVAILABLE without a C compiler or when
    compilation fails (the compiler's output is in the message).
    """
    include_dirs = include_dirs or (package_dir(),)
    compiler = find_compiler()
    if compiler is None:
        raise UnavailableError(
            f"building {name} needs a C compiler; looked for {os.environ.get('CC', 'cc')!r} "
            "on PATH. Install one (e.g. apt-get install gcc) or set CC"
        )
    digest = hashlib.sha256()
    digest.update(" ".join(compiler + list(CFLAGS)).encode())
    digest.update(Path(source).read_bytes())
    for inc in include_dirs:
        for header in sorted(Path(inc).glob("*.h")):
            digest.update(header.read_bytes())
    key = f"{name}-{digest.hexdigest()[:16]}"
    with _lock:
        done = _built.get(key)
        if done is not None and done.exists():
            return done
        out = cache_dir() / f"{key}.so"
        if not out.exists():
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
            os.close(fd)
            cmd = compiler + list(CFLAGS) + [f"-I{d}" for d in include_dirs]
            cmd += [str(source), "-o", tmp]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as exc:
                os.unlink(tmp)
                raise UnavailableError(f"running {' '.join(cmd)} failed: {exc}") from None
            if proc.returncode != 0:
                os.unlink(tmp)
                raise UnavailableError(
                    f"compiling {source} failed (exit {proc.returncode}):\n{proc.stderr.strip()}"
                )
            os.replace(tmp, out)
        _built[key] = out
        return out
