#!/usr/bin/env bash
# Compile the hal-cuda kernels (kernels/src/*.cu: the CTS kernels and the driver's test
# kernels) to PTX for compute_80 (Ampere and newer: the driver JIT-compiles PTX for the
# GPU it loads on). The .ptx outputs are committed, so users and tests need no compiler;
# rerun this after editing kernels/src/*.cu.
#
# Two rewrites follow nvcc, both on whole PTX tokens:
#   .maxntid -> .reqntid       HAL_WORKGROUP_SIZE(n) is __launch_bounds__(n), which nvcc
#                              emits as .maxntid; the HAL means a required size (OpenCL's
#                              reqd_work_group_size), and .reqntid is how PTX says so
#                              (nvcc emits it only for __block_size__, sm_90 and newer).
#   hal_export_NAME -> NAME    export names that are C++ keywords ("double").
# ptxas then checks every rewritten file for sm_80 (no GPU needed).
#
# Needs nvcc and ptxas (CUDA 12 or 13). Override with NVCC=... PTXAS=... ARCH=compute_80.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/../hal_cuda/kernels/src"
out="$here/../hal_cuda/kernels"
NVCC="${NVCC:-nvcc}"
PTXAS="${PTXAS:-ptxas}"
ARCH="${ARCH:-compute_80}"
sm="sm_${ARCH#compute_}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for cu in "$src"/*.cu; do
  name="$(basename "$cu" .cu)"
  "$NVCC" -ptx -arch="$ARCH" -O3 -I "$src" -o "$tmp/$name.ptx" "$cu"
  sed -e 's/^\.maxntid /.reqntid /' -e 's/\bhal_export_\([A-Za-z0-9_]*\)/\1/g' \
    "$tmp/$name.ptx" >"$tmp/$name.final.ptx"
  "$PTXAS" -arch="$sm" -o /dev/null "$tmp/$name.final.ptx"
  mv "$tmp/$name.final.ptx" "$out/$name.ptx"
  echo "built $name.ptx"
done
