#!/usr/bin/env bash
# The GPU check of hal-cuda, in one go on a fresh GPU machine with no package registry:
# installs the carried wheels (.whl/, from tools/fetch_wheels.sh) and the project from the
# working tree, prints the GPU, measures the driver-API call cost (cuda-bindings against
# ctypes), runs the plugin's tests, measures graphs against stream launches
# (tools/graph_cost.py) and where single-op chains spend their time (tools/profile_paths.py),
# then the CTS on cuda://0 and `hal bench --device cuda://0`.
# Logs go to $OUT (default ./gpu-check-out): install.log, call_cost.json, tests.log,
# logical.log, graph_cost.json, profile.log, cts.log, bench.log. Each step has its own time
# limit (seconds: install 30 per pip call, tests 130, cts 80, bench 120; cost, graphs,
# profile and logical 90 each), so the default steps fit in about seven minutes (410 s at
# worst); a failing step is reported and the next one still runs.
#
# Usage (from the checkout's root): plugins/cuda/tools/gpu_check.sh [STEPS]
#   STEPS: a comma list of install,cost,tests,logical,graphs,profile,cts,bench
#   (default: install,tests,cts,bench). `tests` leaves out test_cuda_logical_cts.py, the
#   CTS over two stand-in GPUs: it runs no GPU work (the fake driver replaces the bindings
#   in its subprocess), so the local and CI runs cover it; `logical` runs it here.
set -uo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"
out="${OUT:-$root/gpu-check-out}"
mkdir -p "$out"
py="${PYTHON:-python3}"
steps=",${1:-install,tests,cts,bench},"
export PYTHONUNBUFFERED=1
status=0

step() { [[ "$steps" == *",$1,"* ]]; }

echo "== GPU"
nvidia-smi -L || true
"$py" -c 'import sys, cuda.bindings; print("python", sys.version.split()[0], "cuda-bindings", cuda.bindings.__version__)'

if step install; then
  echo "== install"
  {
    # A wheel install with no index and no compile takes seconds; the limit only stops a hang.
    if compgen -G ".whl/*.whl" >/dev/null; then
      timeout 30 "$py" -m pip install -q --no-index --no-deps --no-compile .whl/*.whl
    fi
    timeout 30 "$py" -m pip install -q --no-index --no-deps --no-build-isolation \
      --config-settings editable_mode=compat \
      -e . -e plugins/local_cpu -e plugins/profilers -e plugins/cuda
  } >"$out/install.log" 2>&1 || { echo "install FAILED (see install.log)"; tail -20 "$out/install.log"; status=1; }
  "$py" -m hal_core info 2>&1 | grep -A3 -E '^  cuda ' | head -8
  "$py" -c 'from hal_cuda import native_lane as n; print("native submit lane:", "built" if n.native is not None else n.unavailable_reason)'
fi

if step cost; then
  echo "== driver call cost (ns per call)"
  timeout 90 "$py" plugins/cuda/tools/driver_call_cost.py 20000 | tee "$out/call_cost.json" || status=1
fi

pytest_args=(-q -p no:cacheprovider -o addopts= -rs)
if step tests; then
  echo "== tests/plugins/cuda"
  # SIGINT at the limit: pytest then reports the test it was in and what passed so far.
  timeout -s INT -k 10 130 "$py" -m pytest "${pytest_args[@]}" tests/plugins/cuda \
    --ignore=tests/plugins/cuda/test_cuda_logical_cts.py >"$out/tests.log" 2>&1 || status=1
  tail -25 "$out/tests.log"
fi

if step logical; then
  echo "== CTS on a logical device over two stand-in GPUs"
  timeout -s INT -k 10 90 "$py" -m pytest "${pytest_args[@]}" \
    tests/plugins/cuda/test_cuda_logical_cts.py >"$out/logical.log" 2>&1 || status=1
  tail -25 "$out/logical.log"
fi

if step graphs; then
  echo "== graphs against stream launches (us per dispatch)"
  timeout 90 "$py" plugins/cuda/tools/graph_cost.py 512 | tee "$out/graph_cost.json" || status=1
fi

if step profile; then
  echo "== single-op chains"
  timeout 90 "$py" plugins/cuda/tools/profile_paths.py >"$out/profile.log" 2>&1 || status=1
  cat "$out/profile.log"
fi

if step cts; then
  echo "== CTS on cuda://0"
  timeout -s INT -k 10 80 "$py" -m pytest "${pytest_args[@]}" --pyargs hal_core.cts \
    --hal-device=cuda://0 \
    >"$out/cts.log" 2>&1 || status=1
  grep -E "^(FAILED|ERROR)" "$out/cts.log" | head -40
  tail -3 "$out/cts.log"
fi

if step bench; then
  echo "== hal bench --device cuda://0"
  # Only the patterns some registered benchmark matches (hal bench refuses the others).
  listed="$("$py" -m hal_core bench --list 2>/dev/null | grep -E '^[a-z]' | cut -d' ' -f1)"
  patterns=()
  for p in 'edge.*' 'cb.*' 'dispatch.direct' 'torch.*' 'cuda.*' 'replay.chain512' 'iree.replay.*' 'alloca.*'; do
    if grep -qE "^${p//\*/.*}$" <<<"$listed"; then
      patterns+=("$p")
    fi
  done
  echo "patterns: ${patterns[*]}"
  timeout 120 "$py" -m hal_core bench --device cuda://0 --repeats 7 "${patterns[@]}" \
    >"$out/bench.log" 2>&1 || status=1
  cat "$out/bench.log" | tail -40
fi
exit $status
