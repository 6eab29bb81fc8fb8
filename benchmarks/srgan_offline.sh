#!/usr/bin/env bash
# SRGAN (MSRResNet x4) trained from scratch on the bundled photos, then quantized four ways and reported.
# Usage: benchmarks/srgan_offline.sh [OUT]   (default runs/srgan_offline; re-running resumes every stage)
set -euo pipefail
OUT=${1:-runs/srgan_offline}
MIXQ=${MIXQ:-mixq}
$MIXQ train configs/offline/srgan_offline_pretrain.json --out "$OUT/pretrain" --resume
$MIXQ train configs/offline/srgan_offline_gan.json --out "$OUT/gan" --resume --set model.weights="$OUT/pretrain/final.pt"
$MIXQ run configs/offline/srgan_offline.json --out "$OUT/run" --set model.weights="$OUT/gan/final.pt"
