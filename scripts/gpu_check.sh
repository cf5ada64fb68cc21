#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) exactly as a session runs it on the H100/H200 with the device tool.
#
# The GPU machine has python3 3.12 with torch, torchvision, numpy and Pillow but no DALI, no webdataset, no ffmpeg
# and no network. DALI and webdataset travel as the three parts of ../shared/tools/pack_gpu_site.sh (about 57 MiB
# each; one call carries at most 64 MiB, so one part per call). Here, once:
#     bash ../shared/tools/pack_gpu_site.sh            # writes .gpusite/c1/part.00 c2/part.01 c3/part.02 (ignored)
# Then three device-tool calls, back to back (the machine stays warm only about 30 s after a call, and /tmp/p
# lives only as long as the machine):
#     1. run  command="bash scripts/gpu_check.sh stage"  carry=[".gpusite/c1"]  timeout_s=120
#     2. run  command="bash scripts/gpu_check.sh stage"  carry=[".gpusite/c2"]  timeout_s=120
#     3. run  command="bash scripts/gpu_check.sh run"    carry=[".gpusite/c3"]  timeout_s=420
# Call 3 stages its part, checks that all three are there, unpacks them to /tmp/site, puts it on PYTHONPATH and
# runs `python3 -m benchmarks.gpu_check` under `timeout`, writing gpu_check.json, gpu_check.md, gpu_check.log and
# dmon.log (nvidia-smi dmon, one line a second) into $OUT. The JSON is rewritten after every section, so a run cut
# off by the timeout still reports. Then give the machine back and commit $OUT/gpu_check.json as
# benchmarks/results/gpu_check_<device>.json.
#
# Usage: bash scripts/gpu_check.sh stage|run [extra gpu_check flags]
# Environment: OUT (output folder; default runs/gpu_check), PARTS_DIR (/tmp/p), SITE_DIR (/tmp/site),
#   GPUSITE (.gpusite), BUDGET_S (220, gpu_check --budget-s), TIMEOUT_S (240: the whole check within 4 minutes),
#   PYTHON (python3).
set -euo pipefail

PARTS_DIR=${PARTS_DIR:-/tmp/p}
SITE_DIR=${SITE_DIR:-/tmp/site}
GPUSITE=${GPUSITE:-.gpusite}
OUT_DIR=${OUT:-runs/gpu_check}
BUDGET_S=${BUDGET_S:-220}
TIMEOUT_S=${TIMEOUT_S:-240}
PYTHON=${PYTHON:-python3}
PARTS=(part.00 part.01 part.02)

stage() {
  mkdir -p "$PARTS_DIR"
  local found=0
  for part in "$GPUSITE"/c*/part.*; do
    [ -f "$part" ] || continue
    cp "$part" "$PARTS_DIR/"
    found=1
  done
  [ "$found" = 1 ] || echo "gpu_check.sh: no $GPUSITE/c*/part.* in this call (name one in carry)" >&2
  echo "gpu_check.sh: parts staged in $PARTS_DIR:"; ls -la "$PARTS_DIR"
}

unpack() {
  local missing=()
  for part in "${PARTS[@]}"; do [ -f "$PARTS_DIR/$part" ] || missing+=("$part"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "gpu_check.sh: missing ${missing[*]} in $PARTS_DIR: the machine went cold between calls; redo calls 1-3 back to back" >&2
    return 1
  fi
  if [ -d "$SITE_DIR/nvidia/dali" ]; then
    echo "gpu_check.sh: $SITE_DIR already unpacked"; return 0
  fi
  mkdir -p "$SITE_DIR"
  cat "${PARTS[@]/#/$PARTS_DIR/}" | xz -dc | tar xf - -C "$SITE_DIR"
  rm -f "$SITE_DIR/nvidia/__init__.py"
  echo "gpu_check.sh: unpacked to $SITE_DIR"
}

run_check() {
  mkdir -p "$OUT_DIR"
  export PYTHONPATH="$SITE_DIR${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONUNBUFFERED=1
  local dmon_pid=""
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi > "$OUT_DIR/dmon.log" 2>&1 || true
    nvidia-smi dmon -s pucm -d 1 >> "$OUT_DIR/dmon.log" 2>&1 &
    dmon_pid=$!
  fi
  local status=0
  timeout --signal=TERM --kill-after=10 "$TIMEOUT_S" \
    "$PYTHON" -m benchmarks.gpu_check --out "$OUT_DIR/gpu_check.json" --budget-s "$BUDGET_S" "$@" \
    2>&1 | tee "$OUT_DIR/gpu_check.log" || status=$?
  if [ -n "$dmon_pid" ]; then kill "$dmon_pid" 2>/dev/null || true; fi
  [ "$status" = 124 ] && echo "gpu_check.sh: cut off after ${TIMEOUT_S}s; the JSON holds every finished section" >&2
  return "$status"
}

case "${1:-}" in
  stage) stage ;;
  run) shift; stage; unpack; run_check "$@" ;;
  *) echo "usage: bash scripts/gpu_check.sh stage|run [gpu_check flags]" >&2; exit 2 ;;
esac
