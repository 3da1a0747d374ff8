#!/usr/bin/env bash
# Download, into the checkout's .whl/, the third-party wheels the GPU machine lacks for
# installing hal-core, hal-local-cpu, hal-profilers and hal-cuda with --no-deps, plus IREE's
# runtime (its `iree-run-module` and `iree-benchmark-replay` are the CUDA peer `hal bench`
# and the replay check measure against).
#
# The GPU machine runs CPython 3.12 on x86-64 with no package registry; its image already
# holds numpy, pluggy, attrs, msgpack, cuda-bindings, torch and cupy (hal-core's and the
# plugins' other dependencies). hal-core's importlib-metadata dependency is only the
# backport of the stdlib module, which 3.12 has, so it is not fetched. Missing there:
#   cffi, pycparser           hal-local-cpu and hal-profilers build their C bindings with cffi
#   ml_dtypes                 already in the image (iree-base-runtime needs it; not fetched)
#   iree-base-runtime==3.13.0 IREE's runtime and tools, CUDA driver included
#
# .whl/ is ignored by the repository's .gitignore, so the wheels are never committed; the
# device tool carries it when a run names it in `carry`. The checkout's own distributions
# are not built here: this machine's Python is not 3.12, and hal-core has C extensions, so
# they are installed from source on the GPU machine (pip install --no-build-isolation).
#
# Usage: plugins/cuda/tools/fetch_wheels.sh [--no-iree]
# Exit status: 0 when every wheel is in .whl/, nonzero when a download failed.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
dest="$root/.whl"
python="${PYTHON:-python3}"

# One version of each: two versions of a name in .whl/ stop the whole install there.
wheels=(cffi==2.0.0 pycparser==3.0)
if [[ "${1:-}" != "--no-iree" ]]; then
  wheels+=(iree-base-runtime==3.13.0)
fi

mkdir -p "$dest"
"$python" -m pip download --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 \
  -d "$dest" "${wheels[@]}"

# The device tool carries at most 64 MiB of working tree in all (wheels included).
total_kib="$(du -sk "$dest" | cut -f1)"
echo "fetch_wheels: $(ls "$dest" | wc -l) wheel(s) in $dest, ${total_kib} KiB"
if (( total_kib > 48 * 1024 )); then
  echo "fetch_wheels: warning: .whl/ is over 48 MiB; with the tree it may pass the 64 MiB carry limit" >&2
fi
