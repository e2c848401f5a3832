#!/usr/bin/env bash
# Issue #34's GPU measurements in one run on one GPU, into OUT_DIR: a JSON and a log per command,
# table.md, configs.md and autotune.md rendered from their JSON (docs/benchmarks.md's GPU tables).
#   bash launch/bench_gpu.sh OUT_DIR [rows] [configs] [warm]     (default: all three, in order)
#   bash launch/bench_gpu.sh OUT_DIR table     (issue #34's Done-when table, sized for one lease)
# rows     every paper backbone's bf16 train step at its paper batch (SGD-momentum) against torch
#          eager and torch.compile, each row's flax variants beside it (the lowerings and XLA
#          options tried as levers) and a device profile of each flax side
#          (`bench --model M --vs-torch --torch-compile --variants ... --profile 3`);
# configs  each paper config's main phase at its defaults (`bench --config`: step time, clips/s,
#          XLA's memory analysis, the allocator's peak, cold compile, a device profile, and the
#          step fed by the config's own train pipeline with the input workers its
#          input.workers=-1 starts on that host, `--with-input`); an entry
#          PATH:KEY=VALUE,... is that config with overrides (`bench --set`), a lever at the config
#          level: LIFT-Net with flax's attention instead of cuDNN's fused one;
# warm     DTCM's main phase compiled twice through one fresh persistent compilation cache: the
#          cold and the warm start's compile; then, through the same cache, with another learning
#          rate: an ablation's first compile, a new program whose convolutions XLA's per-fusion
#          autotuning cache (which JAX keeps beside its own) has timed already;
# autotune the paper configs whose GPU compile is longest (DARKJAX_BENCH_AUTOTUNE_CONFIGS, default
#          ActLumos's teacher and LIFT-Net's student: 56 and 20 distinct cuDNN convolutions, 45
#          and 63 distinct GEMMs that XLA autotunes as Triton fusions), each compiled alone with
#          no persistent cache (truly cold), under each set of DARKJAX_BENCH_XLA_SETS in turn, every
#          config under one set before the next set (a deadline cuts the last sets, not a config):
#          ';'-separated NAME:XLA_FLAGS[:KEY=VALUE,...], the last part config overrides as `bench
#          --set`; default: solo, the defaults; autotune2, XLA's GPU autotuning with initialised
#          buffers and no result checks (XLA's default level is 4: reinitialised and checked);
#          tritonoff, cuBLAS instead of autotuned Triton GEMMs; nvptx, PTX compiled in process by
#          libnvptxcompiler instead of a ptxas process per kernel module, where the CUDA plugin
#          has it (ptxas is most of what the compile spends outside autotuning); autotune1, no
#          initialisation either; determ, cuDNN's nondeterministic algorithms left out (fewer
#          candidates to time). First the option names the CUDA plugin knows
#          (xla-gpu-options.txt), to choose the next sets from. How much of the compile each part
#          of autotuning takes, and what the step loses; XLA's autotuning log of each
#          (NAME-CONFIG.autotune.textproto) beside
#          its JSON (docs/benchmarks.md, "Where a GPU step's compile time goes"; autotuning off is
#          no option there: a step took minutes). About 1.5 minutes a command on an H100 (15 for
#          the defaults). Not in the default parts.
# table    rows and configs as issue #34's Done-when asks them and nothing beside, so that the one
#          run fits a lease (15 minutes of device time, the machine's start included): every row at
#          darkjax's defaults alone (each row's variants, the levers, left out), every config at
#          its defaults (entries with overrides left out), no profiles (DARKJAX_BENCH_PROFILE
#          defaults to 0), the compile pre-pass 4 commands at a time (DARKJAX_BENCH_JOBS defaults
#          to 4). With rows, configs or warm it is an error.
# coldstart a fresh run's compiles before its first step for LIFT-Net's student (the largest
#          init, 147M parameters): the step's, then the init's, against the step's on its thread
#          beside the init's (`bench --config --cold-start --cold-start-mode sequential|aside`),
#          each mode in a process of its own with no persistent cache, so that XLA's autotuning is
#          cold in both (it keeps its results in the process). Not in the default parts.
# init     the largest paper init (LIFT-Net's student, 147M parameters) as darkjax runs it on a
#          GPU, with JAX's threefry kernel, against XLA's lowering of it, bit for bit
#          (`bench --config ... --check-init`; JSON init-check-CONFIG.json). Not in the default
#          parts.
# A failing command is logged and the next one runs. DARKJAX_DRY_RUN=1 prints the commands only.
# Rows are model:batch:frames:variants (`bench --variants`; the first, auto, is darkjax's default);
# DARKJAX_BENCH_TORCH=0 times the rows' flax variants alone, without torch's sides or their
# compiles (a lease for the levers; `bench --markdown-from` renders them as a lever table);
# DARKJAX_BENCH_ROWS / DARKJAX_BENCH_CONFIGS replace the lists; DARKJAX_BENCH_PROFILE=N sets the
# rows' and configs' profiled steps (default 3; 0: no profile, for a run that must fit a lease);
# DARKJAX_BENCH_ROW_ARGS is added to every row's command (e.g. `--size 32` for a smoke run of this
# script on a CPU).
#
# A lent GPU's time is short (minutes, machine start included), and compiling one command after
# the other is most of the run (docs/benchmarks.md). So DARKJAX_BENCH_JOBS=N (N > 1) first compiles
# the steps of every row and config of the parts asked for N commands at a time
# (`--compile-only --concurrent N`, JSON cold-*.json; with DARKJAX_BENCH_TORCH=0 each variant of
# a row in a command of its own, cold-NAME.vK.json, so that a row's levers compile side by side),
# each row and config into persistent caches of its own (JAX_COMPILATION_CACHE_DIR,
# TORCHINDUCTOR_CACHE_DIR under OUT_DIR.cache/NAME: no command reuses another row's or config's
# XLA autotuning or inductor kernels, so each pre-pass compile is cold but for the GPU it shares
# and, for a lever, what its row's other variants autotuned first); the timed parts then compile
# from their own caches, one command at a time, and record the pre-pass figures as the cold
# compiles (`--cold-from`, one for each of its pre-pass commands): each config's timed compile is
# its warm start, so part `warm` is left out. DARKJAX_BENCH_DEADLINE_S=S ends every
# command by S seconds into the run and starts none with under MIN_START_S left (each skipped one
# is named), so that the run returns its files within a lease; DARKJAX_BENCH_TIMEOUT_S (default
# 600) bounds each command. A rerun into the same OUT_DIR skips each command whose JSON is there:
# the same command again on the same machine finishes a run the deadline cut. On a machine without
# darkjax's requirements (a bare GPU image) the wheels in DARKJAX_WHEELS (default .whl, from
# launch/gpu_wheels.sh) are installed first (`pip install --no-deps --target`).
set -uo pipefail
out=${1:?output directory}
shift
parts=${*:-rows configs warm}
table=0
if [[ " $parts " == *" table "* ]]; then
  for part in $parts; do
    case $part in
      rows|configs|warm)
        echo "bench_gpu.sh: part 'table' is rows and configs as issue #34 asks them; not with" \
          "'$part'" >&2
        exit 2 ;;
    esac
  done
  table=1
  parts=$(sed 's/\btable\b/rows configs/' <<<"$parts")
fi
python=${PYTHON:-python3}
dry=${DARKJAX_DRY_RUN:-0}
jobs=${DARKJAX_BENCH_JOBS:-$([ "$table" = 1 ] && echo 4 || echo 1)}
profile=${DARKJAX_BENCH_PROFILE:-$([ "$table" = 1 ] && echo 0 || echo 3)}
deadline=${DARKJAX_BENCH_DEADLINE_S:-0}
timeout_s=${DARKJAX_BENCH_TIMEOUT_S:-600}
torch=${DARKJAX_BENCH_TORCH:-1}
wheels=${DARKJAX_WHEELS:-.whl}
# Max pools as nn.max_pool (a window arg-max and a scatter of atomic adds in the gradient on a GPU),
# the form before running maxima of strided slices became the GPU default for non-overlapping
# windows (C3D's five pools), and the other way round for 3D-ResNeXt's overlapping stem pool, which
# stays nn.max_pool (conv.choose_pool_lowering; docs/benchmarks.md).
pool="max_pool=native"
# 3D-ResNeXt's levers (native on GPU after its stem, every conv channels-last, its grouped ones
# with their groups bundled up to 16 channels): its grouped convs as they are (group_bundle=0,
# conv.gpu_group_bundle) and, beside that, XLA's layout of its 3D convolutions, channels-first
# (the default before both); its (1, 1, 1) convolutions as GEMMs over channels
# (conv.pointwise_gemms); its stem as XLA's 3D convolution, the form before the stem became a
# channels-last 2D one (frames2d); its stem pool as strided-slice maxima; its BatchNorms as
# autodiff of flax's (float32 activations kept, stacked by its scanned stages) instead of
# batch_norm_train. Why each: docs/benchmarks.md ("3D-ResNeXt's layouts and levers on one H100").
resnext="group_bundle=0;xla_gpu_force_conv_nhwc=false,group_bundle=0;pointwise=gemm;\
model.stem_lowering=native;max_pool=separable;bn_relu=plain"
# The convolutions recorded into XLA:GPU's command buffers (CUDA graphs) too (XLA's default command
# types plus CONVOLUTION, not a default in XLA), so that a step replays a few large graphs instead
# of alternating graphs and cuDNN launches (docs/benchmarks.md: a 2% faster R(2+1)D-18 step in one
# run, not yet the default; command buffers off, `bn_relu=plain` and the (2+1)D convolutions as 2D
# ones are settled and no longer the R(2+1)D rows' variants).
cbconv="xla_gpu_enable_command_buffer=FUSION+CUBLAS+CUBLASLT+CUSTOM_CALL+CUDNN"\
"+DYNAMIC_SLICE_FUSION+CONVOLUTION"
# The convolutions with their channels as they are, not zero-padded to multiples of 8 for cuDNN's
# aligned kernels (conv2d.aligned_conv, the GPU default; R3D-18's stem on RGB). Settled on the
# C3D and R(2+1)D rows, whose steps it slows (docs/benchmarks.md, "3D-ResNeXt's layouts and
# levers on one H100").
unaligned="align_channels=off"
# The memory levers on the row with the largest activations, R(2+1)D-18 at batch 64 (every paper
# config fits one H100 without them): the step's state copied instead of donated (bench's
# donate=off; every darkjax.train step donates it), and its blocks rematerialised keeping only the
# convolutions' outputs (model.remat=conv_outputs, darkjax.layers.remat; no paper config's
# default): what each costs the step, against the memory it saves.
memory="donate=off;model.remat=conv_outputs"
# Longest compile first (the pre-pass takes rows and configs in turn, in these orders; a row's
# compile is flax's step, eager torch's first call and torch.compile's, one after the other:
# docs/benchmarks.md).
rows=${DARKJAX_BENCH_ROWS:-"resnext3d_101:8:64:auto;$resnext \
r2plus1d_34_ig65m:8:32:auto;$cbconv r2plus1d_18:16:16:auto;$cbconv \
r2plus1d_18:64:16:auto;$memory c3d:30:16:auto;$pool;lowering=native \
r3d_18:16:16:auto;$unaligned;lowering=native"}
# torch.compile's max-autotune-no-cudagraphs mode autotunes every convolution (minutes per model:
# docs/benchmarks.md); DARKJAX_TORCH_COMPILE_MODES=default,max-autotune-no-cudagraphs adds it.
modes=${DARKJAX_TORCH_COMPILE_MODES:-default}
configs=${DARKJAX_BENCH_CONFIGS:-"configs/actlumos_arid.py configs/lift_arid.py \
configs/dtcm_arid.py configs/dinet_infar.py configs/twostream_infar.py \
configs/lift_arid.py:model.kwargs.attention=xla"}
autotune_configs=${DARKJAX_BENCH_AUTOTUNE_CONFIGS:-"configs/actlumos_arid.py configs/lift_arid.py"}
xla_sets=${DARKJAX_BENCH_XLA_SETS:-"solo:;autotune2:--xla_gpu_autotune_level=2;\
tritonoff:--xla_gpu_enable_triton_gemm=false;nvptx:--xla_gpu_enable_libnvptxcompiler=true;\
autotune1:--xla_gpu_autotune_level=1;determ:--xla_gpu_exclude_nondeterministic_ops=true"}
if [ "$table" = 1 ]; then   # each row at darkjax's defaults alone, each config at its defaults
  rows=$(for row in $rows; do IFS=: read -r m b f _ <<<"$row"; echo "$m:$b:$f:auto"; done)
  configs=$(for config in $configs; do [[ $config == *:* ]] || echo "$config"; done)
  rows=$(echo $rows) configs=$(echo $configs)   # one line each, space-separated
fi
bench="$python -m darkjax.tools.bench"
# The configs' synthetic stand-in clips, rendered once per clip geometry for the whole run
# (`bench --data-dir`; on every host core, under a lock): outside OUT_DIR, like the caches.
data_dir=${out%/}.data
start=$SECONDS
MIN_START_S=${DARKJAX_BENCH_MIN_START_S:-45}   # a timed row takes 40-60 s on an H100

case $jobs in
  ''|*[!0-9]*|0) echo "bench_gpu.sh: DARKJAX_BENCH_JOBS=$jobs is not a count >= 1" >&2; exit 2 ;;
esac
case $profile in
  ''|*[!0-9]*)
    echo "bench_gpu.sh: DARKJAX_BENCH_PROFILE=$profile is not a count >= 0" >&2; exit 2 ;;
esac
case $torch in
  0) [ "$table" = 1 ] && {
       echo "bench_gpu.sh: part 'table' times torch.compile beside flax: not with" \
         "DARKJAX_BENCH_TORCH=0" >&2
       exit 2
     } ;;
  1) ;;
  *) echo "bench_gpu.sh: DARKJAX_BENCH_TORCH=$torch is not 0 or 1" >&2; exit 2 ;;
esac
for part in $parts; do
  case $part in
    rows|configs|warm|autotune|init|coldstart) ;;
    *) echo "bench_gpu.sh: unknown part '$part' (rows, configs, warm, autotune, init, coldstart," \
         "table)" >&2
       exit 2 ;;
  esac
done

limit() {   # NAME: the seconds NAME may run (DARKJAX_BENCH_TIMEOUT_S, at most up to the deadline);
  # nothing, and the skip logged, when under MIN_START_S are left before the deadline
  local left=$timeout_s
  if [ "$deadline" -gt 0 ]; then
    left=$(( deadline - (SECONDS - start) ))
    if [ "$left" -lt "$MIN_START_S" ]; then
      echo "== $1: skipped, $(( SECONDS - start )) s into the run" \
        "(DARKJAX_BENCH_DEADLINE_S=$deadline)"
      return
    fi
    [ "$left" -gt "$timeout_s" ] && left=$timeout_s
  fi
  echo "$left"
}

run() {   # NAME COMMAND...: COMMAND's output into OUT_DIR/NAME.log, its tail and exit code printed
  local name=$1 rc
  shift
  if [ -n "$caches" ]; then   # this row's or config's own caches, its pre-pass's and timed run's
    local owner=${name#cold-}
    owner=${owner%.v[0-9]*}   # a lever's own pre-pass command: its row's caches
    set -- env "JAX_COMPILATION_CACHE_DIR=$caches/$owner/jax" \
      "TORCHINDUCTOR_CACHE_DIR=$caches/$owner/inductor" "$@"
  fi
  if [ "$dry" = 1 ]; then
    printf '%q ' "$@"; echo
    return
  fi
  if [ -s "$out/$name.json" ]; then   # a rerun into the same OUT_DIR resumes
    echo "== $name: done earlier ($out/$name.json kept)"
    return
  fi
  local seconds
  seconds=$(limit "$name")
  case $seconds in
    *skipped*) echo "$seconds"; return ;;
  esac
  echo "== $name: $(printf '%q ' "$@")"
  timeout "$seconds" "$@" >"$out/$name.log" 2>&1
  rc=$?
  tr '\r' '\n' <"$out/$name.log" | tail -n 40
  echo "== $name: exit $rc, $(( SECONDS - start )) s into the run"
}

row_name() { echo "row-$1-b$2-t$3-sgd"; }   # MODEL BATCH FRAMES
config_name() {   # PATH[:KEY=VALUE,...]: config-NAME[-the overrides, '.', '=' and ',' as '_']
  local path=${1%%:*} overrides=
  [[ $1 == *:* ]] && overrides=-$(tr '.=,' '___' <<<"${1#*:}")
  echo "config-$(basename "$path" .py)$overrides"
}
set_words() {   # KEY=VALUE,... (or nothing): SETS, `--set KEY=VALUE` for each item
  local item items
  SETS=()
  IFS=, read -r -a items <<<"$1"
  for item in "${items[@]}"; do SETS+=(--set "$item"); done
}
config_words() {   # ENTRY (PATH[:KEY=VALUE,...]): WORDS, `--config PATH [--set KEY=VALUE]...`
  set_words "$([[ $1 == *:* ]] && echo "${1#*:}")"
  WORDS=(--config "${1%%:*}" "${SETS[@]}" --data-dir "$data_dir")
}

row_words() {   # ROW (model:batch:frames:variants): NAME and WORDS, its bench command less --json
  # and timing
  local model batch frames variants
  IFS=: read -r model batch frames variants <<<"$1"
  NAME=$(row_name "$model" "$batch" "$frames")
  local -a against=(--vs-torch --torch-compile --torch-compile-modes "$modes")
  [ "$torch" = 0 ] && against=()   # the flax variants alone: a row's levers
  # shellcheck disable=SC2206   # $bench and the extra args split into words on purpose
  WORDS=($bench --model "$model" --batch "$batch" --frames "$frames" "${against[@]}"
         --dtype bfloat16 --optimizer sgd --variants "${variants:-auto}"
         ${DARKJAX_BENCH_ROW_ARGS:-})
}

asked() { [[ " $parts " == *" $1 "* ]]; }   # PART: was it asked for

later() {   # COMMAND...: in the background, once fewer than $jobs are running
  if [ "$dry" = 1 ]; then
    "$@"
    return
  fi
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  "$@" &
}

precompile() {   # the compile-only command of every row and config asked for, $jobs at a time:
  # a row, a config, the next row, ... (each list longest first by default)
  local row config i
  local -a todo=() row_list=() config_list=()
  asked rows && read -r -a row_list <<<"$rows"
  asked configs && read -r -a config_list <<<"$configs"
  for (( i = 0; i < ${#row_list[@]} || i < ${#config_list[@]}; i++ )); do
    [ "$i" -lt "${#row_list[@]}" ] && todo+=("row ${row_list[$i]}")
    [ "$i" -lt "${#config_list[@]}" ] && todo+=("config ${config_list[$i]}")
  done
  for item in "${todo[@]}"; do
    case $item in
      row\ *)
        if [ "$torch" = 0 ]; then   # a row's levers: each variant compiled by a command of its
          # own (cold-NAME.vK, K > 0), into the row's caches, side by side
          IFS=: read -r model batch frames variants <<<"${item#row }"
          IFS=';' read -r -a specs <<<"${variants:-auto}"
          for k in "${!specs[@]}"; do
            row_words "$model:$batch:$frames:${specs[$k]}"
            cold=$(cold_name "$NAME" "$k")
            later run "$cold" "${WORDS[@]}" --compile-only --concurrent "$jobs" \
              --json "$out/$cold.json"
          done
          continue
        fi
        row_words "${item#row }"
        later run "cold-$NAME" "${WORDS[@]}" --compile-only --concurrent "$jobs" \
          --json "$out/cold-$NAME.json" ;;
      config\ *)
        config=${item#config }
        config_words "$config"
        later run "cold-$(config_name "$config")" $bench "${WORDS[@]}" --compile-only \
          --concurrent "$jobs" --json "$out/cold-$(config_name "$config").json" ;;
    esac
  done
  wait
}

profile_words() {   # --profile N for the timed rows and configs (DARKJAX_BENCH_PROFILE, default 3;
  # 0: none)
  [ "$profile" -gt 0 ] && echo "--profile $profile"
}

cold_name() {   # NAME K: the pre-pass command of a row's K-th variant (K > 0: a lever's own)
  echo "cold-$1$([ "$2" -gt 0 ] && echo ".v$2")"
}

cold_from() {   # NAME [VARIANTS]: --cold-from of each pre-pass JSON, where the pre-pass wrote one
  # (with DARKJAX_BENCH_TORCH=0 a row's variants are compiled by a command each: VARIANTS, the
  # row's ';'-separated list, says how many)
  local k count=1 path
  local -a specs=()
  [ "$torch" = 0 ] && IFS=';' read -r -a specs <<<"${2:-}"
  [ "${#specs[@]}" -gt 1 ] && count=${#specs[@]}
  [ "$jobs" -gt 1 ] || return 0
  for (( k = 0; k < count; k++ )); do
    path="$out/$(cold_name "$1" "$k").json"
    if [ "$dry" = 1 ] || [ -f "$path" ]; then
      echo "--cold-from $path"
    fi
  done
}

mkdir -p "$out"
# Only where darkjax's requirements are missing (a bare GPU image), and wheels are there.
if [ "$dry" != 1 ] && ls "$wheels"/*.whl >/dev/null 2>&1 && ! $python -c \
    "import grain, ml_collections, tensorflow_datasets, google_crc32c, tensorboardX" 2>/dev/null
then
  site=${TMPDIR:-/tmp}/darkjax-site
  $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$wheels"/*.whl || {
    echo "bench_gpu.sh: installing $wheels failed" >&2
    exit 1
  }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
caches=
if [ "$jobs" -gt 1 ]; then
  caches=${out%/}.cache
  # N processes share the GPU while compiling: JAX takes memory as it needs it.
  XLA_PYTHON_CLIENT_PREALLOCATE=false precompile
fi
for part in $parts; do
  case $part in
    rows)
      for row in $rows; do
        row_words "$row"
        # shellcheck disable=SC2046   # cold_from gives two words or none, profile_words too
        run "$NAME" "${WORDS[@]}" --steps 10 --rounds 3 $(profile_words) --pipelined \
          $(cold_from "$NAME" "$(cut -d: -f4- <<<"$row")") \
          --json "$out/$NAME.json"
      done
      # with the compile-only pre-passes: a row the deadline left untimed shows as its compile
      # (bench leaves out the pre-pass of a row that was timed)
      files=$(ls "$out"/row-*.json "$out"/cold-row-*.json 2>/dev/null)
      if [ "$dry" != 1 ] && [ -n "$files" ]; then
        # shellcheck disable=SC2086   # file names without spaces (row_name, config_name)
        $bench --markdown-from $files >"$out/table.md"
      fi
      ;;
    configs)
      for config in $configs; do
        name=$(config_name "$config")
        config_words "$config"
        # shellcheck disable=SC2046   # cold_from and profile_words give two words or none
        run "$name" $bench "${WORDS[@]}" --steps 10 --rounds 3 $(profile_words) --pipelined \
          --with-input $(cold_from "$name") --json "$out/$name.json"
      done
      files=$(ls "$out"/config-*.json "$out"/cold-config-*.json 2>/dev/null)
      if [ "$dry" != 1 ] && [ -n "$files" ]; then
        # shellcheck disable=SC2086   # file names without spaces (config_name)
        $bench --markdown-from $files >"$out/configs.md"
      fi
      ;;
    warm)
      if [ "$jobs" -gt 1 ]; then
        [ "$dry" = 1 ] || echo "== warm: left out, each config's timed compile is its warm start"
        continue
      fi
      cache=${out%/}.warm-cache   # fresh for a new OUT_DIR, kept for a resumed one
      for start_kind in cold warm; do
        JAX_COMPILATION_CACHE_DIR=$cache run "start-$start_kind" $bench \
          --config configs/dtcm_arid.py --compile-only --data-dir "$data_dir" \
          --json "$out/start-$start_kind.json"
      done
      # the paper's learning rate is 1e-5 (configs/dtcm_base.py): half of it is another program
      JAX_COMPILATION_CACHE_DIR=$cache run "start-ablation" $bench \
        --config configs/dtcm_arid.py --set optimizer.lr=5e-6 --compile-only \
        --data-dir "$data_dir" --json "$out/start-ablation.json"
      ;;
    init)
      run "init-check-lift_arid" $bench --config configs/lift_arid.py --check-init \
        --data-dir "$data_dir" --json "$out/init-check-lift_arid.json"
      ;;
    coldstart)
      for mode in sequential aside; do
        run "coldstart-$mode-lift_arid" env -u JAX_COMPILATION_CACHE_DIR $bench \
          --config configs/lift_arid.py --cold-start --cold-start-mode "$mode" --rounds 1 \
          --data-dir "$data_dir" --json "$out/coldstart-$mode-lift_arid.json"
      done
      ;;
    autotune)
      if [ "$dry" != 1 ]; then   # the XLA:GPU options this CUDA plugin knows, for the next sets
        $python - "$out/xla-gpu-options.txt" <<'PY' || echo "== xla-gpu-options.txt: not written"
import glob, os, re, sys
import jax_plugins
names = set()
for root in jax_plugins.__path__:
  for path in glob.glob(os.path.join(root, "*", "*.so")):
    with open(path, "rb") as plugin:
      names.update(re.findall(rb"\bxla_gpu_[a-z0-9_]{3,}", plugin.read()))
with open(sys.argv[1], "w") as out:
  out.write("\n".join(sorted(name.decode() for name in names)) + "\n")
print(f"== xla-gpu-options.txt: {len(names)} XLA:GPU option names")
PY
      fi
      IFS=';' read -r -a sets <<<"$xla_sets"
      for set in "${sets[@]}"; do
        IFS=: read -r set_name flags overrides <<<"$set"
        set_words "$overrides"
        for config in $autotune_configs; do
          name="$set_name-$(config_name "$config")"
          # and XLA's log of what it autotuned: every candidate of each convolution and GEMM
          # fusion with its time (AutotuningLogs, text), where the compile's time goes
          logged="${flags:+$flags }--xla_gpu_dump_autotune_logs_to=$out/$name.autotune.textproto"
          # no persistent cache: its compiles, and XLA's autotuning results in it, stay cold
          run "$name" env -u JAX_COMPILATION_CACHE_DIR -u TORCHINDUCTOR_CACHE_DIR \
            "XLA_FLAGS=${XLA_FLAGS:-}${XLA_FLAGS:+ }$logged" $bench \
            --config "$config" "${SETS[@]}" --data-dir "$data_dir" --steps 10 --rounds 3 \
            --pipelined --json "$out/$name.json"
        done
      done
      names=$(for set in "${sets[@]}"; do echo "${set%%:*}"; done)
      if [ "$dry" != 1 ] && ls $(for n in $names; do echo "$out/$n-config-"*.json; done) \
          >/dev/null 2>&1; then
        $bench --markdown-from $(for n in $names; do ls "$out/$n-config-"*.json 2>/dev/null; done) \
          >"$out/autotune.md"
      fi
      ;;
  esac
done
[ "$dry" = 1 ] || echo "== bench_gpu.sh: $(( SECONDS - start )) s"
