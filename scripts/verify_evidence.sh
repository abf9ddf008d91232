#!/bin/bash
# Issue 21's evidence for one model: bundle on the build side (TensorFlow: the Keras reference), then verify with
# the base install only (no TensorFlow; [openvino,litert] for those runtimes) on ONNX Runtime, OpenVINO and LiteRT,
# an INT8 and an FP16 variant under the variant gate, and the planted faults of scripts/verify_faults.py.
#
#   scripts/verify_evidence.sh DIR [DATA_DIR|-]
#
# DIR holds model.keras, model.onnx, model.tflite (cnnkit export, --format tflite); results go to DIR/evidence/.
# BUILD_PY: the Python with cnnkit[train] (default: python); VERIFY_PY: the base install's (default: BUILD_PY).
set -u
DIR=$1; DATA=(); [ "${2:--}" != "-" ] && DATA=(--data-dir "$2")
HERE=$(cd "$(dirname "$0")" && pwd)
B="${BUILD_PY:-python} -m cnnkit"; V="${VERIFY_PY:-${BUILD_PY:-python}} -m cnnkit"
OUT=$DIR/evidence; mkdir -p "$OUT"
$B bundle "$DIR/model.onnx" --reference "$DIR/model.keras" "${DATA[@]}" -o "$OUT/model.cnnkit" --force --json "$OUT/bundle.json"
[ -f "$DIR/model.int8.onnx" ] || $B quantize "$DIR/model.onnx" -o "$DIR/model.int8.onnx" --mode static "${DATA[@]}" --json "$OUT/quantize-int8.json"
[ -f "$DIR/model.fp16.onnx" ] || $B quantize "$DIR/model.onnx" -o "$DIR/model.fp16.onnx" --mode fp16 "${DATA[@]}" --json "$OUT/quantize-fp16.json"
${VERIFY_PY:-${BUILD_PY:-python}} -c "import importlib.util as u; print('verify side: tensorflow', u.find_spec('tensorflow'))"
for rt in onnxruntime openvino litert; do
  $V verify "$OUT/model.cnnkit" --runtime $rt --json "$OUT/verify-$rt.json" --force > "$OUT/verify-$rt.log" 2>&1
  echo "bundled model on $rt: exit $?"
done
for m in int8 fp16; do for rt in onnxruntime openvino; do
  $V verify "$OUT/model.cnnkit" --model "$DIR/model.$m.onnx" --runtime $rt --json "$OUT/verify-$m-$rt.json" --force > "$OUT/verify-$m-$rt.log" 2>&1
  echo "$m variant on $rt: exit $?"
done; done
${BUILD_PY:-python} "$HERE/verify_faults.py" "$DIR/model.onnx" "$DIR/faults" > /dev/null
for f in weight nan fp16-off; do
  $V verify "$OUT/model.cnnkit" --model "$DIR/faults/$f.onnx" --json "$OUT/fault-$f.json" --force > "$OUT/fault-$f.log" 2>&1
  echo "fault $f: exit $? (1 expected)"
done
$V verify "$OUT/model.cnnkit" --preprocess unit --json "$OUT/fault-preprocess.json" --force > "$OUT/fault-preprocess.log" 2>&1
echo "fault --preprocess unit: exit $? (1 expected)"
