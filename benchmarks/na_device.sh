#!/usr/bin/env bash
# The GPU checks of the leaner NA backward, the CUDA-graph-safe NA ops and tools/benchmark.py's modes (issue 21),
# in one call of about 8 minutes on one H200:
#
#   bash benchmarks/na_device.sh [STAGE ...]     # default: tests ops models; also: tiles order
#
#   tests   the NA CUDA tests (incl. the CUDA-graph capture of triton fwd+bwd with RPB and dilation) and
#           benchmark.py's cudagraph test
#   ops     the op table: NA (triton / flex / torch, with and without RPB) against same-FLOP window SDPA with the
#           same bias table, at the DiNAT-T stage shapes, fwd and fwd+bwd (benchmarks/neighborhood_ops.py)
#   models  tools/benchmark.py in --mode eager, compile and cudagraph: dinat_tiny, nat_tiny, l2vit_tiny, favit_b2
#           against swin_tiny (ratios to it, same run and mode); inference at 256, SGD train step at 128, bf16
#   tiles   backend_choices.py triton_tiles (12 tile shapes at the 7 DiNAT-T shapes, batch 128)
#   order   compiled dinat_tiny and swin_tiny with --inference-then-train (compile, eval inference, model.train(),
#           SGD steps in one process: the order whose training fell back to eager speed)
#
# Results go to $OUT (default /tmp/na_device): one JSON / log per stage.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/na_device}
mkdir -p "$OUT"
export OUT
STAGES=${*:-tests ops models}
MODELS="swin_tiny_patch4_window7_224 dinat_tiny nat_tiny l2vit_tiny favit_b2"
BENCH="python tools/benchmark.py --device cuda --amp bf16 --channels-last --batch-size 256 --train-batch-size 128
       --optimizer sgd --steps 10 --warmup 3 --no-macs --baseline swin_tiny_patch4_window7_224"

for stage in $STAGES; do
  echo "=== $stage" >&2
  case $stage in
    tests)
      timeout 120 python -m pytest -q -p no:cacheprovider tests/ops/test_neighborhood_cuda.py \
        "tests/tools/test_convert_and_benchmark.py::test_benchmark_cudagraph_mode_against_a_peer" 2>&1 \
        | tail -15 | tee "$OUT/tests.log" ;;
    ops)
      timeout 120 python benchmarks/neighborhood_ops.py --device cuda --repeats 10 --out "$OUT/ops.json" 2>&1 \
        | tee "$OUT/ops.log" ;;
    models)
      # compile first: cudagraph reuses its Inductor cache (same graphs); cudagraph prepares 5 at a time, since a
      # prepared process keeps its graphs' memory pools while the others are timed
      for mode_jobs in compile:10 cudagraph:5 eager:10; do
        mode=${mode_jobs%:*}
        timeout 200 $BENCH --mode "$mode" --jobs "${mode_jobs#*:}" --timeout 190 --model $MODELS \
          --json "$OUT/models_$mode.json" \
          2>&1 | grep -v Warning | tail -12 | tee "$OUT/models_$mode.log"
      done ;;
    tiles)
      timeout 400 python benchmarks/backend_choices.py triton_tiles 2>&1 | tail -90 | tee "$OUT/tiles.log" ;;
    order)
      timeout 300 $BENCH --mode compile --inference-then-train --model swin_tiny_patch4_window7_224 dinat_tiny \
        --timeout 280 --json "$OUT/order.json" 2>&1 | grep -v Warning | tail -8 | tee "$OUT/order.log" ;;
    *)
      echo "unknown stage $stage (tests ops models tiles order)" >&2; exit 2 ;;
  esac
done
