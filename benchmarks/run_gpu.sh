#!/usr/bin/env bash
# Every pending H100 row of benchmarks/RESULTS.md in one run: under 10 minutes on one H100 (each row has its own
# time limit; the limits add up to 9 min 50 s), each row's output in OUT/<row>.txt, and OUT/summary.txt with each
# row's exit status and seconds (124: it hit its limit, the figures printed so far are still in its file).
#
#   benchmarks/run_gpu.sh [OUT]            # default OUT: benchmarks/gpu-results/<UTC time>
#   benchmarks/run_gpu.sh --smoke [OUT]    # the same rows, tiny sizes, on the CPU: checks the script, no figures
#
# Rows: ISN inference (compiled buckets), ViT-B/16 inference RGB and RGB + segmentation (with the segmentation
# network's per-upload cost), training ResNet-50 (plain, --compile, --gpu-decode) and ViT-B/16 (RGB, RGB +
# segmentation), worker memory, upload end to end with a ResNet-50 ISN bundle (1 and 32 users), GeoCLIP serving.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
OUT=${1:-benchmarks/gpu-results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SCRATCH=$(mktemp -d /tmp/geoweb-gpu-bench.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
CELLS=../shared/data/geoestimation
SUMMARY="$OUT/summary.txt"
{
  echo "# run_gpu.sh $(date -u +%FT%TZ) smoke=$SMOKE commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; fi
} > "$SUMMARY"

row() {  # row NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "\$ $*" > "$OUT/$name.txt"
  timeout -k 5 "$limit" "$@" >> "$OUT/$name.txt" 2>&1
  local status=$?
  echo "$name: exit $status, $((SECONDS - start)) s (limit $limit s)" | tee -a "$SUMMARY"
}

if [ $SMOKE = 1 ]; then
  DEV=cpu
  INF_ISN=(--cells tiny --backbone tiny --scene-backbone tiny --batch-sizes 1,2 --images 2 --model-repeats 1
           --latency-runs 1 --skip-naive)
  INF_VIT=(--cells tiny --backbone vit_tiny --batch-sizes 1 --images 1 --model-repeats 1 --latency-runs 1 --skip-naive)
  SEG=tiny
  TRAIN=(--backbone tiny --batch-size 4 --workers 1 --steps 2 --warmup 1 --heads 10 20 30)
  TRAIN_VIT=(--backbone vit_tiny)
  SHARD_IMAGES=16
  MEMORY=(--model demo --batches 1)
  UPLOAD_BACKBONE=tiny
  UPLOAD=(--uploads 1 --warmup 1)
  GEOCLIP=(--batch-sizes 1 --images 1 --latency-runs 1)
  RETRIEVAL=(--sizes 20000 --queries 16)
else
  DEV=cuda
  INF_ISN=(--cells paper --batch-sizes 1,8,32,64,128,256 --compile)
  INF_VIT=(--cells paper --backbone vit_b_16 --batch-sizes 1,8,32,64,128 --compile)
  SEG=deeplabv3_resnet50
  TRAIN=(--batch-size 256 --workers 15 --steps 30 --warmup 5)
  TRAIN_VIT=(--backbone vit_b_16)
  SHARD_IMAGES=1024
  MEMORY=(--model resnet50 --batches 1,32,64)
  UPLOAD_BACKBONE=resnet50
  UPLOAD=(--uploads 10)
  GEOCLIP=(--batch-sizes 1,8,32,64,128,256 --compile)
  # Search within Cell runs on the host CPU (NumPy); 1 M vectors keeps the row within its limit (5 M: RESULTS.md).
  RETRIEVAL=(--sizes 1000000 --queries 256)
fi

# Shards (photos; photos + segmentation maps) and a random ResNet-50 ISN bundle, built once for the rows below.
row prepare 45 "$PY" - "$SCRATCH" "$SHARD_IMAGES" "$UPLOAD_BACKBONE" "$SMOKE" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
sys.path.insert(0, ".")
from bench_training import build_shards
from predictor.ml.isn import random_model, save_model
from predictor.ml.partitions import Partitioning, tiny_partitionings

scratch, images, backbone, smoke = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
print("shards", build_shards(scratch / "shards", images, None))
print("shards with segmentation", build_shards(scratch / "shards-seg", images, None, segmentation=True))
cells = Path("../shared/data/geoestimation")
partitionings = tiny_partitionings(0) if smoke else [
    Partitioning.from_csv(cells / f"cells_50_{t}.csv", name=n)
    for t, n in ((5000, "coarse"), (2000, "middle"), (1000, "fine"))]
model = random_model(partitionings=partitionings, backbone=backbone, scene_backbone=backbone, name="bench-isn")
print("bundle", save_model(scratch / "bench-isn", model))
EOF

row inference_isn 90 "$PY" benchmarks/bench_inference.py --device $DEV "${INF_ISN[@]}"
row inference_vit_b16_rgb 50 "$PY" benchmarks/bench_inference.py --device $DEV --kind vit "${INF_VIT[@]}"
row inference_vit_b16_seg 55 "$PY" benchmarks/bench_inference.py --device $DEV --kind vit "${INF_VIT[@]}" \
    --segmentation $SEG
row training_resnet50 25 "$PY" benchmarks/bench_training.py --device $DEV "${TRAIN[@]}" --shards "$SCRATCH/shards"
row training_resnet50_compile 45 "$PY" benchmarks/bench_training.py --device $DEV "${TRAIN[@]}" \
    --shards "$SCRATCH/shards" --compile
if [ $SMOKE = 1 ]; then GPU_DECODE=(); else GPU_DECODE=(--gpu-decode); fi
row training_resnet50_gpu_decode 25 "$PY" benchmarks/bench_training.py --device $DEV "${TRAIN[@]}" \
    --shards "$SCRATCH/shards" "${GPU_DECODE[@]}"
row training_vit_b16_rgb 25 "$PY" benchmarks/bench_training.py --device $DEV "${TRAIN[@]}" "${TRAIN_VIT[@]}" \
    --shards "$SCRATCH/shards"
row training_vit_b16_seg 30 "$PY" benchmarks/bench_training.py --device $DEV "${TRAIN[@]}" "${TRAIN_VIT[@]}" \
    --shards "$SCRATCH/shards-seg" --segmentation
row worker_memory 25 "$PY" benchmarks/bench_worker_memory.py --device $DEV "${MEMORY[@]}"
row upload_1_user 45 "$PY" benchmarks/bench_upload.py --device $DEV --bundle "$SCRATCH/bench-isn" --users 1 \
    "${UPLOAD[@]}"
row upload_32_users 45 "$PY" benchmarks/bench_upload.py --device $DEV --bundle "$SCRATCH/bench-isn" --users 32 \
    "${UPLOAD[@]}"
row geoclip 45 "$PY" benchmarks/bench_geoclip.py --device $DEV "${GEOCLIP[@]}" --cells "$CELLS"
row retrieval 40 "$PY" benchmarks/bench_retrieval.py "${RETRIEVAL[@]}" --dir "$SCRATCH/retrieval"
echo "figures under $OUT (summary: $SUMMARY)"
