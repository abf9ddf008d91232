#!/usr/bin/env bash
# CI parity gate on the seed CNN: train -> export -> parity. Exits non-zero if the exported model is not
# the same model (or anything before it fails). The JSON verdict lands in reports/ for archiving.
#   CNNKIT=path/to/cnnkit (default .venv/bin/cnnkit)   CNNKIT_DATA_DIR=MNIST files (default: ../shared/data/mnist-t10k-split if present, else digits)
set -euo pipefail
cd "$(dirname "$0")/.."
cnnkit=${CNNKIT:-.venv/bin/cnnkit}
out=${CI_PARITY_DIR:-runs/ci-parity}
data_args=()
if [ -n "${CNNKIT_DATA_DIR:-}" ]; then
    data_args=(--data-dir "$CNNKIT_DATA_DIR")
elif [ -d ../shared/data/mnist-t10k-split ]; then
    data_args=(--data-dir ../shared/data/mnist-t10k-split)
else
    data_args=(--dataset digits)
fi
mkdir -p reports "$(dirname "$out")"  # cnnkit refuses outputs in folders that do not exist
"$cnnkit" train --spec mnist-cnn "${data_args[@]}" --epochs 2 --out "$out" --force
"$cnnkit" export "$out/model.keras" -o "$out/model.onnx" --force
"$cnnkit" parity "$out/model.keras" "$out/model.onnx" "${data_args[@]}" --samples 500 --batch-sizes 1,7,64 \
    --json reports/ci-parity.json --force
