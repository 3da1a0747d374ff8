#!/usr/bin/env bash
# Compile the hal-amdgpu OpenCL C kernels (CTS kernels and builtin blit kernels) to HSACO
# code objects for the documented targets. The outputs are committed, so users and tests
# need no compiler; rerun this after editing kernels/src/*.cl.
#
# Needs clang and lld with the AMDGPU target (Debian: apt-get install clang-15 lld-15; clang
# runs the ld.lld installed beside it to link the code object).
# Override with CLANG=... TARGETS="gfx1100 gfx90a".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/../hal_amdgpu/kernels/src"
out="$here/../hal_amdgpu/kernels"
CLANG="${CLANG:-clang-15}"
# gfx1100: RDNA3 (wave32). gfx90a: CDNA2 (MI200, wave64). gfx1030: RDNA2.
TARGETS="${TARGETS:-gfx1100 gfx1030 gfx90a}"
for target in $TARGETS; do
  for cl in "$src"/*.cl; do
    name="$(basename "$cl" .cl)"
    dest="$out/${name}--amdgcn-amd-amdhsa--${target}.hsaco"
    "$CLANG" -x cl -cl-std=CL2.0 -target amdgcn-amd-amdhsa -mcpu="$target" \
      -cl-kernel-arg-info -nogpulib -O2 -mcode-object-version=5 -I "$src" -o "$dest" "$cl"
    echo "built $(basename "$dest")"
  done
done
