#!/usr/bin/env bash
# The JAX Pallas kernels on a GPU, for deciding whether they leave opt-in: their GPU tests
# (through dispatch and the kit, under use("jax.pallas")), then `python -m xpsoftmax bench`
# on JAX's GPU with the default choice (jax.custom_jvp etc., XLA) and with the Pallas
# kernels picked (XPSOFTMAX_IMPLEMENTATION=jax.pallas), float32 and bfloat16, side by side
# in one run. Results under $OUT (default gpu-results/). Wheels as scripts/gpu_run.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# Not the interpreted kernels' subprocess (a CPU check of 150 s); -v names every failure even
# when the time limit stops pytest before its summary.
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout "${TEST_LIMIT:-120}" python3 -m pytest \
  -p no:cacheprovider -v -n "${JOBS:-8}" tests/test_pallas.py tests/test_fast_paths.py \
  tests/test_values.py tests/test_no_mutation.py \
  -k "(jax and gpu or pallas) and not interpreted" > "$OUT/tests.txt" 2>&1
tests=$?
grep -E "^(\[gw[0-9]+\] \[ *[0-9]+%\] )?(FAILED|ERROR) " "$OUT/tests.txt" | sed 's/^\[gw[0-9]*\] \[ *[0-9]*%\] //; s/ - .*//; s/ *$//' | sort -u
tail -n 2 "$OUT/tests.txt"
bench=0
for dtype in float32 bfloat16; do
  shape=4096x8192
  [ "$dtype" = bfloat16 ] && shape=4096x32768
  for pick in default jax.pallas; do
    env=()
    [ "$pick" = jax.pallas ] && env=(XPSOFTMAX_IMPLEMENTATION=jax.pallas)
    echo "== $dtype $shape, $pick" | tee -a "$OUT/bench.txt"
    env "${env[@]}" python3 -m xpsoftmax bench --library jax --device gpu --shape "$shape" \
      --dtype "$dtype" --json "$OUT/bench-$dtype-$pick.json" 2>&1 | tee -a "$OUT/bench.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || bench=1
  done
done
echo "tests exit $tests, bench exit $bench" | tee -a "$OUT/bench.txt"
