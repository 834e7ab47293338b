#!/usr/bin/env bash
# The prepared run for a lent GPU machine (issue 8's long run), one command that fits one 10-minute call:
#   1. the CUDA tests (they skip on every CPU machine, CI included);
#   2. fresh synthetic rooms, PROCS generator processes in parallel (new seeds SEED0 + 1000 k, never used for
#      tuning), plus the selection rooms (seed 13000, the first SELECT of them);
#   3. the newest training milestone resumed on them for TRAIN_S seconds (then SIGTERM: the trainer writes
#      last.ckpt and exits 130), on the GPU at batch BATCH and learning rate LR;
#   4. the start and the result evaluated on the same selection pairs (same device, solver seed 0).
# Results under $OUT (at most 8 files of 16 MiB come back): session.log, cuda_tests.txt, train.log,
# metrics.jsonl, eval_start.json, eval_end.json, last.ckpt.part_aa/_ab (cat them together).
#
#   here, once:       bash training/device_session.sh wheels     # .whl/: rosbags and its needs, Python 3.12
#   on the machine:   device run, carry [".whl"], command "bash training/device_session.sh run", timeout_s 600
#   dry run on a CPU: DRY=1 OUT=/tmp/out bash training/device_session.sh run   (tiny sizes; a test runs it)
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS="rosbags==0.11.9 apsw==3.54.1.0 lz4==4.4.5 ruamel.yaml==0.19.1 backports.zstd==1.8.0"
RESUME=${RESUME:-training/checkpoints/default_small_stage9_step2118.ckpt}
CONFIG=${CONFIG:-training/checkpoints/default_small_stage9_step2118.resolved_config.yaml}
if [ "${DRY:-0}" = 1 ]; then
  : "${DEVICE:=cpu}" "${PROCS:=1}" "${ROOMS:=1}" "${FRAMES:=8}" "${SELECT:=1}" "${TRAIN_S:=45}" "${BATCH:=2}"
  : "${WORKERS:=0}" "${EVAL_PAIRS:=3}"
  [ -n "${WORK:-}" ] || { WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT; }
fi
DEVICE=${DEVICE:-cuda}; PROCS=${PROCS:-12}; ROOMS=${ROOMS:-40}; FRAMES=${FRAMES:-30}; SELECT=${SELECT:-20}
TRAIN_S=${TRAIN_S:-240}; BATCH=${BATCH:-24}; LR=${LR:-5e-5}; WORKERS=${WORKERS:-10}; EVAL_PAIRS=${EVAL_PAIRS:-300}
SEED0=${SEED0:-41000}; WORK=${WORK:-/tmp/mickey_session}
PY=${PY:-python3}

wheels() {
  mkdir -p .whl && grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  local p="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64"
  # shellcheck disable=SC2086
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    $p --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $WHEELS && ls -l .whl
}

log() { echo "[$(date +%T)] $*" | tee -a "$OUT/session.log"; }

evaluate() {  # checkpoint, name
  local sets="--set data.max_angle_deg=30 --set data.min_baseline_m=0.15 --set data.max_baseline_m=1.2"
  # shellcheck disable=SC2086
  $PY training/evaluate.py --checkpoint "$1" --data "$WORK/select" --sample "$EVAL_PAIRS" --seed 0 \
    --device "$DEVICE" --out "$WORK/$2" $sets --set data.depth_topic=/camera/depth/image_raw \
    --set "data.cache_dir=$WORK/cache" >> "$OUT/session.log" 2>&1 && cp "$WORK/$2/metrics.json" "$OUT/$2.json"
  log "evaluate $2: rc $?"
}

run() {
  : "${OUT:?set OUT to the folder for the results}"
  mkdir -p "$OUT" "$WORK"
  if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site || { echo "device_session: cannot install .whl" >&2; exit 2; }
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  log "start: device $DEVICE, $PROCS x $ROOMS rooms, train ${TRAIN_S}s at batch $BATCH lr $LR from $RESUME"
  { nvidia-smi 2>&1 | head -15; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } \
    >> "$OUT/session.log" 2>&1
  local pids=() k
  for ((k = 0; k < PROCS; k++)); do
    $PY training/make_synthetic.py "$WORK/rooms/s$k" --scenes "$ROOMS" --frames "$FRAMES" --seed $((SEED0 + 1000 * k)) \
      > "$WORK/gen$k.log" 2>&1 & pids+=($!)
  done
  $PY training/make_synthetic.py "$WORK/select" --scenes "$SELECT" --frames "$FRAMES" --seed 13000 > "$WORK/gen_sel.log" 2>&1 &
  pids+=($!)
  if [ "${DRY:-0}" != 1 ]; then
    timeout 200 $PY -m pytest -q -p no:cacheprovider -rs -k "cuda or gpu" test/training/test_trainer_official.py \
      test/test_solver.py test/test_cli.py test/test_bench_gpu.py test/test_pipeline.py > "$OUT/cuda_tests.txt" 2>&1
    log "cuda tests: rc $? ($(tail -n 1 "$OUT/cuda_tests.txt"))"
  fi
  for k in "${pids[@]}"; do wait "$k" || { log "generator failed: $(tail -c 300 "$WORK"/gen*.log)"; exit 1; }; done
  log "rooms ready ($(du -sh "$WORK/rooms" | cut -f1))"
  evaluate "$RESUME" eval_start
  local run_dir="$WORK/run"
  timeout -s TERM "$TRAIN_S" $PY training/train.py --config "$CONFIG" --resume "$RESUME" \
    "data.train=[$WORK/rooms]" "data.val=[]" "data.cache_dir=$WORK/cache" "data.num_workers=$WORKERS" \
    "train.run_dir=$run_dir" "train.device=$DEVICE" "train.batch_size=$BATCH" "optim.lr=$LR" \
    train.checkpoint_every=500 train.progress=false > "$OUT/train.log" 2>&1
  log "train: rc $? (124: stopped at the time limit, the trainer wrote its checkpoint); $(tail -n 1 "$OUT/train.log")"
  cp "$run_dir/metrics.jsonl" "$OUT/metrics.jsonl" 2>/dev/null
  [ -f "$run_dir/checkpoints/last.ckpt" ] || { log "no last.ckpt"; exit 1; }
  evaluate "$run_dir/checkpoints/last.ckpt" eval_end
  split -b 15M "$run_dir/checkpoints/last.ckpt" "$OUT/last.ckpt.part_"
  log "done: $(ls "$OUT" | tr '\n' ' ')"
}

case "${1:-}" in
  wheels) wheels ;;
  run) run ;;
  *) echo "usage: device_session.sh wheels|run (see the header)" >&2; exit 2 ;;
esac
