#!/usr/bin/env bash
# The first-GPU check (issue 29 item 5): every GPU stage of the paper's configuration at Stable
# Diffusion 1.5's true shapes on CUDA, in fp16 and in bf16 (one table each, to paste into the
# README's "Real-scale experiments"), with synthesis images/s against a plain diffusers
# StableDiffusionPipeline loop on the same weights, and a DreamBooth step through
# `accelerate launch` on every device when there are two or more.
#
#   benchmarks/gpu_check.sh [--model DIR] [--workdir DIR]   on a CUDA machine
#   benchmarks/gpu_check.sh --dry                           on CPU, tiny shapes, in seconds (CI)
#
# --model: a Stable Diffusion 1.x folder in diffusers format (a real checkpoint, or none: a
# random SD 1.5 is written to $WORKDIR/sd15, about 4.3 GB, nothing is downloaded).
# Every stage runs in its own process (its own CUDA peak) through benchmarks/bench_true_shapes.py.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
DRY=0
MODEL=""
WORKDIR="${TMPDIR:-/tmp}/lthash-gpu-check"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry) DRY=1 ;;
    --model) MODEL="$2"; shift ;;
    --workdir) WORKDIR="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$WORKDIR"
export HF_HUB_OFFLINE=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"
STAGES="$("$PYTHON" -c 'import sys; sys.path.insert(0, "'"$HERE"'"); import bench_true_shapes as b; print(",".join(b.GPU_CHECK_STAGES))')"

if [ "$DRY" = 1 ]; then
  # CPU, the tiny random SD (32 px, 4 x 16 x 16 latents), hashing at 32 px: shapes, not speed
  MODEL="${MODEL:-$WORKDIR/tiny-sd}"
  echo "## gpu_check.sh --dry: CPU, tiny shapes ($(date -u +%F))"
  "$PYTHON" "$HERE/bench_true_shapes.py" --model "$MODEL" --write-model tiny --device cpu --precision no \
    --stages "$STAGES" --in-process --steps 2 --batch 1 --images 1 --sampler-steps 2 --hash-steps 1 \
    --hash-size 32 --hash-batch 2 --image-size 32 --threads 1 --workdir "$WORKDIR"
  exit 0
fi

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check.sh: no CUDA device (run with --dry on CPU)" >&2
  exit 1
fi
MODEL="${MODEL:-$WORKDIR/sd15}"
echo "## gpu_check.sh on $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | sort | uniq -c | xargs) ($(date -u +%F))"
for PRECISION in fp16 bf16; do
  echo
  echo "### $PRECISION"
  # the reference preset's batches (--batch 0), the paper's synthesis batch (16) and 50 sampler steps
  "$PYTHON" "$HERE/bench_true_shapes.py" --model "$MODEL" --write-model sd15 --device cuda \
    --precision "$PRECISION" --stages "$STAGES" --steps 5 --batch 0 --images 16 --sampler-steps 50 \
    --hash-steps 5 --threads 4 --workdir "$WORKDIR" --json "$WORKDIR/gpu_check_$PRECISION.json"
done
