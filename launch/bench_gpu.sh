#!/usr/bin/env bash
# Issue #34's GPU measurements in one run on one GPU, into OUT_DIR: a JSON and a log per command,
# table.md rendered from the rows' JSON (docs/benchmarks.md's GPU table).
#   bash launch/bench_gpu.sh OUT_DIR [rows] [configs] [warm]     (default: all three, in order)
# rows     every paper backbone's bf16 train step at its paper batch (SGD-momentum) against torch
#          eager and torch.compile, each row's flax variants beside it (the lowerings and XLA
#          options tried as levers) and a device profile of each flax side
#          (`bench --model M --vs-torch --torch-compile --variants ... --profile 3`);
# configs  each paper config's main phase at its defaults (`bench --config`: step time, clips/s,
#          XLA's memory analysis, the allocator's peak, cold compile);
# warm     DTCM's main phase compiled twice through one fresh persistent compilation cache: the
#          cold and the warm start's compile.
# A failing command is logged and the next one runs. DARKJAX_DRY_RUN=1 prints the commands only.
# Rows are model:batch:frames:variants (`bench --variants`; the first, auto, is darkjax's default);
# DARKJAX_BENCH_ROWS / DARKJAX_BENCH_CONFIGS replace the lists.
set -uo pipefail
out=${1:?output directory}
shift
parts=${*:-rows configs warm}
python=${PYTHON:-python}
nhwc="lowering=native,xla_gpu_force_conv_nhwc=true"   # XLA's 3D convolutions forced channels-last
rows=${DARKJAX_BENCH_ROWS:-"r2plus1d_18:16:16:auto;$nhwc r2plus1d_34_ig65m:8:32:auto;$nhwc \
resnext3d_101:8:64:auto;$nhwc c3d:30:16:auto;$nhwc r3d_18:16:16:auto;$nhwc \
r2plus1d_18:64:16:auto;$nhwc"}
# torch.compile's max-autotune-no-cudagraphs mode autotunes every convolution (minutes per model:
# docs/benchmarks.md); DARKJAX_TORCH_COMPILE_MODES=default,max-autotune-no-cudagraphs adds it.
modes=${DARKJAX_TORCH_COMPILE_MODES:-default}
configs=${DARKJAX_BENCH_CONFIGS:-"configs/lift_arid.py configs/actlumos_arid.py configs/dtcm_arid.py \
configs/twostream_infar.py configs/dinet_infar.py"}
bench="$python -m darkjax.tools.bench"

run() {   # NAME COMMAND...: COMMAND's output into OUT_DIR/NAME.log, its tail and exit code printed
  local name=$1 rc
  shift
  if [ "${DARKJAX_DRY_RUN:-0}" = 1 ]; then
    echo "$*"
    return
  fi
  echo "== $name: $*"
  "$@" >"$out/$name.log" 2>&1
  rc=$?
  tr '\r' '\n' <"$out/$name.log" | tail -n 40
  echo "== $name: exit $rc"
}

mkdir -p "$out"
for part in $parts; do
  case $part in
    rows)
      for row in $rows; do
        IFS=: read -r model batch frames variants <<<"$row"
        name="row-$model-b$batch-t$frames-sgd"
        run "$name" $bench --model "$model" --batch "$batch" --frames "$frames" --vs-torch \
          --torch-compile --torch-compile-modes "$modes" --dtype bfloat16 --optimizer sgd \
          --steps 10 --rounds 3 \
          --variants "${variants:-auto}" --profile 3 --json "$out/$name.json"
      done
      if [ "${DARKJAX_DRY_RUN:-0}" != 1 ] && ls "$out"/row-*.json >/dev/null 2>&1; then
        $bench --markdown-from "$out"/row-*.json >"$out/table.md"
      fi
      ;;
    configs)
      for config in $configs; do
        name="config-$(basename "$config" .py)"
        run "$name" $bench --config "$config" --steps 10 --rounds 3 --json "$out/$name.json"
      done
      ;;
    warm)
      cache=$(mktemp -d "${TMPDIR:-/tmp}/darkjax-jcache-XXXXXX")
      for start in cold warm; do
        JAX_COMPILATION_CACHE_DIR=$cache run "start-$start" $bench --config configs/dtcm_arid.py \
          --compile-only --json "$out/start-$start.json"
      done
      ;;
    *)
      echo "bench_gpu.sh: unknown part '$part' (rows, configs, warm)" >&2
      exit 2
      ;;
  esac
done
