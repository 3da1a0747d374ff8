#!/usr/bin/env bash
# Compile the hal-amdgpu OpenCL C kernels (CTS kernels, test kernels and the builtin blit
# kernels of the device library) to HSACO code objects. The outputs are committed, so users
# and tests need no compiler; rerun this after editing kernels/src/*.cl.
#
# Needs clang and lld with the AMDGPU target (Debian 12: apt-get install clang-19 lld-19, and
# clang-22 lld-22 from bookworm-security for gfx9-4-generic, which LLVM 19 does not know;
# clang runs the ld.lld installed beside it to link the code object).
# Override with CLANG=... CLANG_GFX94=... TARGETS="gfx11-generic gfx90a" OUT=/some/dir
# (default: the package).
#
# The default set is the smallest one covering every current target, as IREE's device
# library does: LLVM generic targets for each family, and exact processors only where no
# generic target that this compiler can build covers them:
#   gfx9-generic     gfx900 gfx902 gfx904 gfx906 gfx909 gfx90c (wave64)
#   gfx10-3-generic  RDNA2: gfx1030..gfx1036 (wave32)
#   gfx11-generic    RDNA3: gfx1100..gfx1103, gfx1150..gfx1152 (wave32)
#   gfx12-generic    RDNA4: gfx1200 gfx1201 (wave32)
#   gfx9-4-generic   CDNA3/CDNA4: gfx940 gfx941 gfx942 gfx950 (wave64; built by clang-22)
#   gfx90a           CDNA2 (MI200): no generic family covers it
#   gfx942           CDNA3 (MI300): the exact object for the main MI300 part, built by the
#                    same clang-19 as the rest (the generic one serves gfx940/941/950)
#   gfx1100          RDNA3: the exact object the driver's own tests and IREE's default test
#                    chip use (gfx11-generic serves every other RDNA3 part)
# Generic targets need code object v6 (which carries the generic version in e_flags);
# exact ones are built as v5, which every ROCm 5.x/6.x loader accepts.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/../hal_amdgpu/kernels/src"
out="${OUT:-$here/../hal_amdgpu/kernels}"
CLANG="${CLANG:-clang-19}"
TARGETS="${TARGETS:-gfx9-generic gfx9-4-generic gfx10-3-generic gfx11-generic gfx12-generic gfx90a gfx942 gfx1100}"
CLANG_GFX94="${CLANG_GFX94:-clang-22}"
for target in $TARGETS; do
  case "$target" in
    *-generic) version=6 ;;
    *) version=5 ;;
  esac
  compiler="$CLANG"
  [[ "$target" == gfx9-4-generic ]] && compiler="$CLANG_GFX94"
  for cl in "$src"/*.cl; do
    name="$(basename "$cl" .cl)"
    dest="$out/${name}--amdgcn-amd-amdhsa--${target}.hsaco"
    # clang-19 warns that v6 is "still in development" (no flag silences it): LLVM's
    # generic targets exist only in v6, and ROCr 6.1+ loads them, so the warning is dropped.
    "$compiler" -x cl -cl-std=CL2.0 -target amdgcn-amd-amdhsa -mcpu="$target" \
      -cl-kernel-arg-info -nogpulib -O2 -mcode-object-version="$version" \
      -I "$src" -o "$dest" "$cl" 2>&1 | { grep -v "code object v6 is still in development" >&2 || true; }
    echo "built $(basename "$dest")"
  done
done
