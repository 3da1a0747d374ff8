#!/usr/bin/env bash
# IREE's own CUDA runtime on the 512-dispatch chain: the peer of hal-core's replay on the GPU.
#
#   plugins/cuda/tools/iree_cuda_peer.sh [OUTDIR]      (default: $OUT/iree-cuda-peer or
#                                                       /tmp/iree-cuda-peer)
#
# 1. iree-run-module --device=cuda runs tests/plugins/cuda/iree_executables/chain512.vmfb
#    (compiled for sm_80 by that directory's generate.py; the GPU machine has no compiler)
#    on tests/replay_corpus/chain.input{0,1}.npy, capturing the HAL work to
#    OUTDIR/chain512.cuda.ireereplay (--device_replay_output) and the result to
#    OUTDIR/chain512.cuda.out.npy, which is checked against numpy's float32 chain.
# 2. iree-benchmark-replay --device=cuda --replay_scope=execute on that capture (JSON in
#    OUTDIR/iree_benchmark_replay.json); the median per iteration and per dispatch are printed.
# 3. The last line is `export HAL_CUDA_CHAIN512_CAPTURE=...`: with it in the environment,
#    `hal bench replay.chain512 iree.replay.chain512 --device cuda://0` replays this same
#    capture (hal_cuda.bench) instead of capturing its own.
#
# Needs iree-base-runtime 3.13 (iree-run-module, iree-benchmark-replay), numpy and python3.
# Environment: DEVICE (IREE's device URI, default cuda), REPEATS (default 15), VMFB (another
# build of the chain, e.g. for local-task when testing this script without a GPU).
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
out="${1:-${OUT:-/tmp}/iree-cuda-peer}"
device="${DEVICE:-cuda}"
repeats="${REPEATS:-15}"
vmfb="${VMFB:-$root/tests/plugins/cuda/iree_executables/chain512.vmfb}"
python="${PYTHON:-python3}"
x="$root/tests/replay_corpus/chain.input0.npy"
w="$root/tests/replay_corpus/chain.input1.npy"
capture="$out/chain512.cuda.ireereplay"
mkdir -p "$out"

iree-run-module --device="$device" --module="$vmfb" --function=chain \
  --input=@"$x" --input=@"$w" --output=@"$out/chain512.cuda.out.npy" \
  --device_replay_output="$capture" >"$out/iree_run_module.log"
"$python" - "$x" "$w" "$out/chain512.cuda.out.npy" <<'PY'
import sys

import numpy as np

x, w, got = (np.load(p) for p in sys.argv[1:4])
want = x
for _ in range(512):
    want = (want @ w).astype(np.float32)
err = float(np.max(np.abs(got - want)) / max(1e-30, float(np.max(np.abs(want)))))
print(f"iree-run-module chain512: max relative error vs numpy {err:.2e}")
if not err < 1e-3:
    sys.exit("iree-run-module's result does not match numpy's chain")
PY

iree-benchmark-replay --device="$device" --replay_scope=execute --benchmark_format=json \
  --benchmark_repetitions="$repeats" --benchmark_min_time=0.1s "$capture" \
  >"$out/iree_benchmark_replay.json"
"$python" - "$out/iree_benchmark_replay.json" <<'PY'
import json
import statistics
import sys

units = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}
rows = json.load(open(sys.argv[1]))["benchmarks"]
median = [r for r in rows if r.get("aggregate_name") == "median"]
if median:
    us = float(median[0]["real_time"]) * units[median[0].get("time_unit", "ns")]
else:
    us = statistics.median(
        float(r["real_time"]) * units[r.get("time_unit", "ns")]
        for r in rows
        if r.get("run_type", "iteration") == "iteration"
    )
print(f"iree-benchmark-replay chain512 (execute scope): {us:.1f} us/iteration, "
      f"{us / 512:.3f} us/dispatch")
PY
echo "export HAL_CUDA_CHAIN512_CAPTURE=$capture"
