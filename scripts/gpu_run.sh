#!/usr/bin/env bash
# The GPU conformance tests and the GPU benchmarks in one call, for the lent GPU machine
# (the device tool) or any CUDA machine. Results go under $OUT (default: gpu-results/):
#   device.txt   nvidia-smi and the library versions
#   tests.txt    the pytest run of every GPU backend (torch:cuda, jax:gpu, cupy), -v
#   junit.xml    the same, machine-readable
#   bench.json   python -m xpsoftmax bench on the GPU libraries (fast, generic, own), float32
#   bench.png    its chart
#   bench-bf16.json  the same in bfloat16 on longer rows (BF16_SHAPE, default 4096x32768)
#   tune.txt     scripts/tune_triton.py --defaults --host-profile: the Triton kernels' GPU time apart from the
#                host's (CUDA graphs), beside torch's kernels
#   peers.txt    with PEERS_ONLY=1 (a second call), instead of all the above: tune_triton.py
#                --peers (torch.compile, Liger) and scripts/tune_jax.py (JAX's calls queued)
# (install.txt, the editable install's log, is removed when the install worked: the lent
# machine returns at most 8 files.)
#
# The GPU image has torch, jax and cupy but not this package's other dependencies: carry them
# as wheels in .whl/ (see README, "GPU"); they are installed into /tmp/site first.
#
#   bash scripts/gpu_run.sh            # everything
#   QUICK=1 bash scripts/gpu_run.sh    # the benchmarks on small shapes only
#   PEERS_ONLY=1 bash scripts/gpu_run.sh  # peers.txt only (about 5 minutes at most)
#   JOBS=14 TEST_LIMIT=240 ...          # pytest workers (default 8), seconds for the tests
#                                       # (an H100 with 16 CPUs: 150 s at -n 14)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
# The package itself from the working tree (src/, whose xpsoftmax/backends links to backends/).
if python3 -m pip install -q --no-deps --no-build-isolation --no-compile -e . > "$OUT/install.txt" 2>&1; then
  rm -f "$OUT/install.txt"
else
  echo "editable install failed (see install.txt); relying on PYTHONPATH" >> "$OUT/install.txt"
fi

{
  nvidia-smi || echo "nvidia-smi: not found"
  python3 - <<'PY'
import importlib
for name in ("numpy", "torch", "jax", "cupy", "triton", "array_api_compat", "xpsoftmax"):
    try:
        m = importlib.import_module(name)
        print(f"{name} {getattr(m, '__version__', '?')}")
    except Exception as exc:  # report, do not stop
        print(f"{name}: {type(exc).__name__}: {exc}")
PY
} > "$OUT/device.txt" 2>&1

if [ -n "${PEERS_ONLY:-}" ]; then
  # A second call (the first takes most of a call's 10 minutes): the peers the GPU goals
  # name beside the Triton kernels, on the two float32 shapes (Inductor compiles each
  # function first): torch.compile, and Liger-Kernel where its wheel was carried; then JAX
  # without its dispatch (calls queued): XLA, the Pallas kernels and jax.nn / optax.
  status=0
  timeout 300 python3 scripts/tune_triton.py --defaults --peers --quick > "$OUT/peers.txt" 2>&1 || status=1
  XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 240 python3 scripts/tune_jax.py >> "$OUT/peers.txt" 2>&1 || status=1
  echo "peers exit $status" | tee -a "$OUT/device.txt"
  exit "$status"
fi

# Every test on the GPU backends: their ids contain cuda, gpu or cupy.
# A time limit keeps the benchmarks' turn on a lent machine; -n runs the workers side by side.
# Several test workers share the GPU: JAX must not take 75% of its memory in each (the
# benchmarks below keep JAX's default allocator).
# -v: every test's name and outcome in tests.txt, so that failures are named even when the
# time limit stops pytest before its summary (-q prints an anonymous F); the failures and the
# last lines go to the output.
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout "${TEST_LIMIT:-600}" python3 -m pytest -p no:cacheprovider -v -n "${JOBS:-8}" \
  -k "cuda or gpu or cupy" --junitxml="$OUT/junit.xml" > "$OUT/tests.txt" 2>&1
tests=$?
grep -E "^(\[gw[0-9]+\] \[ *[0-9]+%\] )?(FAILED|ERROR) " "$OUT/tests.txt" | sed 's/^\[gw[0-9]*\] \[ *[0-9]*%\] //; s/ - .*//; s/ *$//' | sort -u
tail -n 2 "$OUT/tests.txt"

shape=()
[ -n "${QUICK:-}" ] && shape=(--quick)
python3 -m xpsoftmax bench "${shape[@]}" --library torch --library jax --library cupy \
  --json "$OUT/bench.json" --plot "$OUT/bench.png" 2>&1 | tee "$OUT/bench.txt"
bench=${PIPESTATUS[0]}
bf16=(--shape "${BF16_SHAPE:-4096x32768}")
[ -n "${QUICK:-}" ] && bf16=(--quick)
python3 -m xpsoftmax bench "${bf16[@]}" --dtype bfloat16 --library torch --library jax \
  --library cupy --json "$OUT/bench-bf16.json" 2>&1 | tee -a "$OUT/bench.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || bench=1

tune=(--defaults --host-profile)
[ -n "${QUICK:-}" ] && tune+=(--quick)
timeout 300 python3 scripts/tune_triton.py "${tune[@]}" > "$OUT/tune.txt" 2>&1 || bench=1

echo "tests exit $tests, bench exit $bench" | tee -a "$OUT/device.txt"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
