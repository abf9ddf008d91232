#!/usr/bin/env bash
# gpu_proof.sh — prove `cnnkit bench --provider cuda` on a real GPU (issue 23), in as few device calls as possible.
#
# Only cnnkit's public CLI is used (`cnnkit ...` and `pytest -m gpu tests/gpu`); helpers in scripts/gpu_proof.py
# import no cnnkit module.
#
# WHY PARTS. The GPU machine (device tool, kind nvidia-h100-x1) has Python 3.12, onnxruntime 1.30.0 (CPU build),
# numpy, onnx, typer, rich, matplotlib, pillow, sympy, pytest, and CUDA 13's runtime, cuBLAS, cuFFT, cuRAND and
# cuDNN 9 as pip packages (nvidia-*, nvidia-cudnn-cu13: PyTorch 2.11+cu130's) — but no onnxruntime-gpu, no
# pydantic, no TensorFlow and no network. PyPI's onnxruntime-gpu 1.30.0 and 1.31.1 (Linux x86_64) are CUDA 13
# builds: the CUDA provider library needs libcublasLt.so.13, libcublas.so.13, libcudart.so.13, libcurand.so.10
# and cuDNN 9 (extras: nvidia-cuda-runtime~=13.0, nvidia-cufft~=12.0, nvidia-curand~=10.0,
# nvidia-cudnn-cu13~=9.0), the machine's own libraries; no CUDA-12 build is needed, and the CUDA-13 feed outside
# PyPI is not reachable from here anyway. We take 1.30.0: it matches the machine's onnxruntime 1.30.0, and its
# cp312 manylinux_2_28 wheel (246,685,715 bytes, 235.3 MiB) splits into 4 parts of at most 59 MiB, whereas
# 1.31.1 (243.7 MiB) needs 5. The wheel does not shrink (xz and zstd -19 gain < 2 %: its CUDA kernels are
# already compressed). One call carries at most 64 MiB with the working tree (~3 MiB), so each part travels in
# its own call, back to back while the machine is held (it goes back after 30 s idle), and waits in
# .gpu-proof/stash/ there (ignored paths stay between calls on a warm machine). TensorFlow cannot be had there,
# so Keras' side of parity travels as stored outputs on stored inputs (refs/*.npz, made here by prepare).
#
# SUBCOMMANDS
#   prepare              here (CPU machine, TensorFlow installed; PyPI reachable): download the wheel and the
#                        missing dependency wheels, split, build the cnnkit wheel, train/export the models, save
#                        Keras' reference outputs, check sizes. Everything lands in .gpu-proof/ (git-ignored).
#   remote-part N        on the GPU: check part N's SHA-256 and keep it in .gpu-proof/stash/.
#   remote-run           on the GPU: join, check, install, run every step (time-bounded, going on after a
#                        failure), leave run.log, summary.txt, summary.json and results.tgz in $OUT.
#   docs DIR [SECONDS]   here: DIR = the files that came back (files_at); write docs/benchmarks-gpu.md's
#                        section; SECONDS = the device lease's held_s (GPU time used).
#   plan                 here: print the device calls with the sizes that would travel.
# GPU_PROOF_DRY=1 runs remote-part/remote-run here against the CPU (steps run with --provider cuda
# --allow-fallback; the wheel is joined, checked and installed for cp312 into a scratch target, not imported).
#
# THE DEVICE CALLS, IN ORDER (a later session, lent a GPU; run `scripts/gpu_proof.sh prepare` first, here).
# Make calls 1-5 back to back, nothing in between: the machine goes back after 30 s idle, and the parts with it.
# Leave `kind` out of every call (the first gets nvidia-h100-x1, or nvidia-h200 when none is free: the same image;
# later calls keep the machine). Call 1 prints nvidia-smi's GPU line: the first sign the GPU is there.
#   1. run command="bash scripts/gpu_proof.sh remote-part 1"
#          carry=[".gpu-proof/parts/part-1", ".gpu-proof/parts.sha256"]  timeout_s=120
#      start-up 1-2 min (counted), ~62 MiB up; the command itself < 5 s.            expected 1.5-2.5 min
#   2. the same with part-2                                                          expected 0.3-0.5 min
#   3. the same with part-3                                                          expected 0.3-0.5 min
#   4. the same with part-4; it prints "all 4 parts here"                           expected 0.3-0.5 min
#   5. run command="bash scripts/gpu_proof.sh remote-run"
#          carry=[".gpu-proof/payload", ".gpu-proof/parts.sha256"]  timeout_s=480
#      ~22 MiB up; join + install ~30 s, then the steps until the 420 s budget (GPU_PROOF_BUDGET_S, counted
#      from the command's start) is spent: later steps are skipped, said in the summary; the output_tail
#      ends with the summary; $OUT: run.log, summary.txt, summary.json, results.tgz (~1-3 MiB).  expected 7.5 min
#   6. give_back at once (idle time counts).
#   Total: 10-12.5 min of the 15 min of device time, start-up included (2.5 min or more to spare). A part call
#   that finds the machine gone (it says which parts it has) means starting over from part 1 (+2-3 min); a
#   remote-run that says parts are missing exits at once (exit 3). Do not re-run remote-run unless over 8 min
#   are left; with less, give_back and report what came back.
#   Then here: scripts/gpu_proof.sh docs <files_at of call 5> <lease.held_s>   (writes docs/benchmarks-gpu.md)
#   Run prepare in the checkout that the device tool sends (the session's own), just before the calls: it ends
#   with `plan`, which checks that every call fits 64 MiB with the working tree as it is then.
#
# WHAT remote-run MEASURES (in this order, each step under `timeout`; a failure is logged and the next step runs;
# once the budget is spent the rest are skipped, and the summary says so):
#   check-deps, env (nvidia-smi, CUDA runtime and cuDNN versions as loaded, onnxruntime.print_debug_info),
#   cnnkit doctor --provider cuda;
#   cnnkit bench --provider cuda: seed CNN + MobileNetV2 (alpha 0.35, 96x96, trained 3 epochs here) at batch
#     1..4096 (IO binding: the default on CUDA); MobileNetV2 (alpha 1.0, 224x224, random weights: timing only)
#     at 1..1024; the same models on --provider cpu on the GPU machine's host CPU (baseline);
#   parity: Keras (CPU, stored outputs) against ONNX Runtime on CUDA (TF32 on, TF32 off) and on the CPU, with
#     cnnkit parity's tolerances (scripts/gpu_proof.py compare);
#   cnnkit quantize --mode fp16 --provider cuda (3 models), cnnkit parity FP32 vs FP16 on CUDA, bench FP16 vs FP32;
#   pytest -m gpu tests/gpu (CNNKIT_TEST_SEED_CNN: the seed CNN made here);
#   bench --cuda-graph, --cudnn-conv-algo-search heuristic, --tune (batch 1, 64, 256);
#   the largest batch that fits: doubling from 8192 (2048 for 224) until a run fails (45 s per model at most);
#   bench --include-copies (what IO binding saves).
# Dry run here (GPU_PROOF_DRY=1; the CPU, 2 loaded cores, small batch sizes): 526 s; every step exited as
# expected (doctor 1: no CUDA here) except quantize of the 224 model, over its 90 s on these cores (alone: 4 min
# 52 s, exit 1 with the variant written and marked failed, as meant).

set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
GP=.gpu-proof
ORT_VERSION=${GPU_PROOF_ORT_VERSION:-1.30.0}
PART_MIB=${GPU_PROOF_PART_MIB:-59}
CALL_LIMIT_MIB=63            # the device tool's 64 MiB per call, less a margin
DRY=${GPU_PROOF_DRY:-0}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# Pure-Python requirements carried at the versions tested here (the machine lacks pydantic; the others may be older).
DEP_NAMES=(pydantic pydantic-core annotated-types typing-inspection typing-extensions typer rich)

die() { echo "gpu_proof: $*" >&2; exit 2; }
here_python() {
    if [ -n "${GPU_PROOF_PY:-}" ]; then echo "$GPU_PROOF_PY"
    elif [ -x "$ROOT/.venv/bin/python" ]; then echo "$ROOT/.venv/bin/python"
    else command -v python3; fi
}
mib() { echo $(( ($1 + 1048575) / 1048576 )); }
tree_bytes() {  # what travels besides carry: tracked and untracked-not-ignored files
    git ls-files -z -co --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}'
}
path_bytes() { du -sb "$@" 2>/dev/null | awk '{s+=$1} END {print s+0}'; }

# ------------------------------------------------------------------------------------------------ prepare
prepare() {
    local py; py=$(here_python)
    export PYTHONPATH="$ROOT/toolkit${PYTHONPATH:+:$PYTHONPATH}" CNNKIT_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL=2
    local ck=("$py" -m cnnkit) t0=$SECONDS
    mkdir -p "$GP/wheelhouse" "$GP/parts" "$GP/build" "$GP/payload/wheels" "$GP/payload/models" "$GP/payload/refs" \
        "$GP/payload/here"
    echo "== onnxruntime-gpu $ORT_VERSION, cp312 manylinux (for the GPU machine's Python 3.12)"
    if ! ls "$GP"/wheelhouse/onnxruntime_gpu-"$ORT_VERSION"-cp312-*.whl >/dev/null 2>&1; then
        "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
            -d "$GP/wheelhouse" "onnxruntime-gpu==$ORT_VERSION" || die "pip download onnxruntime-gpu failed"
    fi
    local whl; whl=$(find "$GP/wheelhouse" -name "onnxruntime_gpu-$ORT_VERSION-cp312-*.whl" | head -1)
    echo "   $whl: $(stat -c %s "$whl") bytes"
    unzip -p "$whl" '*/METADATA' | grep -E '^Requires-Dist: nvidia' | sed 's/^/   needs (extra) /'

    echo "== split into parts of $PART_MIB MiB"
    rm -f "$GP"/parts/part-*
    split -b "${PART_MIB}M" -d -a 1 --numeric-suffixes=1 "$whl" "$GP/parts/part-"
    local nparts; nparts=$(find "$GP/parts" -name 'part-*' | wc -l)
    (cd "$GP/parts" && sha256sum part-*) > "$GP/parts.sha256.tmp"
    (cd "$GP/wheelhouse" && sha256sum "$(basename "$whl")") >> "$GP/parts.sha256.tmp"
    mv "$GP/parts.sha256.tmp" "$GP/parts.sha256"
    sed 's/^/   /' "$GP/parts.sha256"

    echo "== dependency wheels (cp312) and the cnnkit wheel"
    rm -f "$GP"/payload/wheels/*.whl
    local pins=() n v
    for n in "${DEP_NAMES[@]}"; do
        v=$("$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$n") || die "$n is not installed here"
        pins+=("$n==$v")
    done
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
        -d "$GP/payload/wheels" "${pins[@]}" || die "pip download of ${pins[*]} failed"
    "$py" -m pip wheel -q --no-deps -w "$GP/payload/wheels" "$ROOT" || die "building the cnnkit wheel failed"
    find "$GP/payload/wheels" -name '*.whl' -printf '   %f\n' | sort

    echo "== seed CNN: cnnkit train (shipped MNIST, 5 epochs, seed 0) + export + parity (Keras vs ONNX, CPU)"
    local seed="$GP/payload/models/seed"
    if [ ! -f "$seed/model.onnx" ]; then
        "${ck[@]}" train --out "$seed" --epochs 5 --seed 0 --force | tail -3 || die "train failed"
        "${ck[@]}" export "$seed/model.keras" -o "$seed/model.onnx" --force | tail -2 || die "export failed"
    fi
    "${ck[@]}" parity "$seed/model.keras" "$seed/model.onnx" --provider cpu --json "$GP/payload/here/parity-seed-cpu.json" \
        --force | tail -4

    echo "== MobileNetV2 (alpha 0.35, 96x96, 10 classes) trained 3 epochs on the shipped digits; export; parity (CPU)"
    python_helper() { "$py" scripts/gpu_proof.py "$@"; }
    [ -d "$GP/payload/images/0" ] || python_helper images "$GP/payload/images" || die "images failed"
    local mn="$GP/build/mnv2" mo="$GP/payload/models/mnv2"
    mkdir -p "$mo"
    [ -f "$mn/model.keras" ] || python_helper mobilenet "$mn/model.keras" --alpha 0.35 --size 96 --epochs 3 2>&1 | tail -1
    if [ ! -f "$mo/model.onnx" ]; then
        "${ck[@]}" export "$mn/model.keras" -o "$mo/model.onnx" --preprocess tf --force | tail -2 || die "export mnv2 failed"
    fi
    "${ck[@]}" parity "$mn/model.keras" "$mo/model.onnx" --data-dir "$GP/payload/images" --provider cpu \
        --json "$GP/payload/here/parity-mnv2-cpu.json" --force | tail -4

    echo "== MobileNetV2 (alpha 1.0, 224x224, 1000 classes), random weights: timing only"
    local m2="$GP/build/mnv2_224" m2o="$GP/payload/models/mnv2_224"
    mkdir -p "$m2o"
    [ -f "$m2/model.keras" ] || python_helper mobilenet "$m2/model.keras" --alpha 1.0 --size 224 --classes 1000 --epochs 0 2>&1 | tail -1
    if [ ! -f "$m2o/model.onnx" ]; then
        "${ck[@]}" export "$m2/model.keras" -o "$m2o/model.onnx" --preprocess tf --force | tail -2 || die "export mnv2_224 failed"
    fi
    cp -f "$mn/build.json" "$GP/payload/here/build-mnv2.json"; cp -f "$m2/build.json" "$GP/payload/here/build-mnv2_224.json"

    echo "== Keras reference outputs on golden inputs (Keras on the CPU; parity on CUDA compares against these)"
    python_helper keras-refs "$seed/model.keras" "$GP/payload/refs/seed.npz" --samples 200 --preprocess raw 2>&1 | tail -1
    python_helper keras-refs "$mn/model.keras" "$GP/payload/refs/mnv2.npz" --samples 100 --preprocess tf 2>&1 | tail -1
    python_helper compare "$GP/payload/refs/seed.npz" "$seed/model.onnx" --no-cuda | tail -1
    python_helper compare "$GP/payload/refs/mnv2.npz" "$mo/model.onnx" --no-cuda | tail -1

    {
        echo "onnxruntime_gpu_wheel=$(basename "$whl")"
        echo "parts=$nparts"
        echo "commit=$(git rev-parse HEAD 2>/dev/null)$(git diff --quiet HEAD -- toolkit pyproject.toml 2>/dev/null || echo '+dirty')"
        echo "prepared=$(date -u +%FT%TZ)"
        echo "prepared_on=$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
    } > "$GP/payload/manifest.txt"
    plan
    echo "prepare: done in $(( SECONDS - t0 )) s"
}

plan() {
    [ -f "$GP/parts.sha256" ] || die "run prepare first"
    local tree payload sums n=0 worst=0 p b
    tree=$(tree_bytes); payload=$(path_bytes "$GP/payload"); sums=$(path_bytes "$GP/parts.sha256")
    echo "== device calls (each: working tree $(mib "$tree") MiB + carry; limit 64 MiB)"
    for p in "$GP"/parts/part-*; do
        n=$((n + 1)); b=$(( tree + $(path_bytes "$p") + sums ))
        (( b > worst )) && worst=$b
        echo "   $n. run 'bash scripts/gpu_proof.sh remote-part $n' carry=[\"$p\", \"$GP/parts.sha256\"]: $(mib "$b") MiB"
    done
    b=$(( tree + payload + sums )); (( b > worst )) && worst=$b
    echo "   $((n + 1)). run 'bash scripts/gpu_proof.sh remote-run' carry=[\"$GP/payload\", \"$GP/parts.sha256\"] timeout_s=480: $(mib "$b") MiB"
    echo "   $((n + 2)). give_back"
    if (( worst > CALL_LIMIT_MIB * 1048576 )); then
        echo "plan: a call would carry $(mib "$worst") MiB, over ${CALL_LIMIT_MIB} MiB: re-run prepare with a smaller GPU_PROOF_PART_MIB" >&2
        return 1
    fi
    echo "plan: every call fits (largest $(mib "$worst") MiB of 64)"
}

# ------------------------------------------------------------------------------------------------ remote side
stash_dir() {
    if [ "$DRY" = 1 ]; then echo "${GPU_PROOF_STASH:-$ROOT/$GP/dry-stash}"; else echo "${GPU_PROOF_STASH:-$ROOT/$GP/stash}"; fi
}

nparts_wanted() { grep -c ' part-' "$GP/parts.sha256"; }
have_parts() {  # "1 2 of 4"
    local stash=$1 want got=() i
    want=$(nparts_wanted)
    for ((i = 1; i <= want; i++)); do [ -f "$stash/part-$i" ] && got+=("$i"); done
    echo "${got[*]:-none} of $want"
}

remote_part() {
    local n=${1:?part number} stash; stash=$(stash_dir)
    [ -f "$GP/parts.sha256" ] || die "carry $GP/parts.sha256 with every part"
    [ -f "$GP/parts/part-$n" ] || die "part-$n did not travel (carry $GP/parts/part-$n)"
    mkdir -p "$stash"
    (cd "$GP/parts" && grep " part-$n\$" ../parts.sha256 | sha256sum -c --quiet -) || die "part-$n: SHA-256 mismatch"
    if [ "$DRY" = 1 ]; then cp -f "$GP/parts/part-$n" "$stash/"; else mv -f "$GP/parts/part-$n" "$stash/"; fi
    echo "part-$n: SHA-256 ok, kept in $stash; parts here: $(have_parts "$stash")"
    if [ "$n" = 1 ] && command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    fi
    if [ "$(have_parts "$stash")" = "$(seq -s ' ' 1 "$(nparts_wanted)") of $(nparts_wanted)" ]; then
        echo "all $(nparts_wanted) parts here: next, remote-run"
    fi
}

RES='' WORK='' DEADLINE=0 PY='' H=() CK=() PROV=() QPROV=() NOCUDA=()
step() {  # step NAME TIMEOUT_S COMMAND... : time-bounded, logged, never stops the run
    local name=$1 t=$2; shift 2
    local left=$(( DEADLINE - $(date +%s) )) rc t0 secs shown="$*"
    shown=${shown//"$PY $ROOT/"/python3 }; shown=${shown//"$ROOT/"/}; shown=${shown//"$PY"/python3}
    if (( left < 15 )); then
        echo "--- [$name] SKIPPED: the run's budget is spent"
        printf '%s\tskipped\t0\t%s\n' "$name" "$shown" >> "$RES/steps.tsv"
        return 0
    fi
    (( t > left - 10 )) && t=$(( left - 10 ))
    echo "--- [$name] \$ $* (timeout ${t}s)"
    t0=$EPOCHREALTIME
    timeout -k 5 "$t" "$@" > "$RES/$name.log" 2>&1
    rc=$?
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    grep -v -E '^(I0000|W0000|E0000|WARNING: All log)' "$RES/$name.log" | tail -n "${STEP_TAIL:-25}" | sed 's/^/    /'
    (( rc == 124 || rc == 137 )) && echo "    TIMED OUT after ${t}s"
    echo "    [$name] exit $rc in ${secs}s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$secs" "$shown" >> "$RES/steps.tsv"
    return 0
}

largest() {  # largest MODEL FIRST CAP: double the batch until a run fails, takes too long, or reaches CAP
    local model=$1 b=$2 cap=$3 rc note t0=$SECONDS
    while (( b <= cap )); do
        if (( DEADLINE - $(date +%s) < 25 || SECONDS - t0 > ${GPU_PROOF_PROBE_S:-45} )); then
            printf '%s\t%s\t%s\t%s\n' "$model" "$b" -1 "not tried: the probe's time for this model (or the run's budget) is spent" \
                >> "$RES/largest.tsv"
            return 0
        fi
        timeout -k 5 60 "${CK[@]}" bench "$model" "${PROV[@]}" --batch-sizes "$b" --warmup 1 --min-iterations 3 --min-time 0 \
            --cudnn-conv-algo-search heuristic --json "results/largest-${model%.onnx}-$b.json" --force \
            > "$RES/largest-${model%.onnx}-$b.log" 2>&1
        rc=$?
        if (( rc == 0 )); then
            note=$("${H[@]}" bench-line "$RES/largest-${model%.onnx}-$b.json" 2>&1 | tail -1)
        else
            note=$(grep -v -E '^(I0000|W0000|E0000)' "$RES/largest-${model%.onnx}-$b.log" | tail -1 | cut -c1-200)
            [ "$rc" = 124 ] && note="timed out (60 s)"
        fi
        printf '%s\t%s\t%s\t%s\n' "$model" "$b" "$rc" "$note" >> "$RES/largest.tsv"
        echo "    largest: $model batch $b: exit $rc ${note}"
        (( rc != 0 )) && return 0
        b=$(( b * 2 ))
    done
    printf '%s\t%s\t%s\t%s\n' "$model" "$b" -1 "not tried: the cap ($cap) was reached without a failure" >> "$RES/largest.tsv"
}

remote_run() {
    local stash t_start; stash=$(stash_dir); t_start=$(date +%s)
    local budget=${GPU_PROOF_BUDGET_S:-420}
    DEADLINE=$(( t_start + budget ))
    [ -f "$GP/payload/manifest.txt" ] || die "carry $GP/payload (run prepare here first)"
    local whl nparts
    whl=$(sed -n 's/^onnxruntime_gpu_wheel=//p' "$GP/payload/manifest.txt"); nparts=$(sed -n 's/^parts=//p' "$GP/payload/manifest.txt")
    local missing=()
    for ((i = 1; i <= nparts; i++)); do [ -f "$stash/part-$i" ] || missing+=("$i"); done
    if (( ${#missing[@]} )); then
        echo "remote-run: parts missing in $stash: ${missing[*]} (have $(have_parts "$stash")): the machine was given back"
        echo "between calls, or a part call was skipped; start again from 'remote-part 1'"
        exit 3
    fi
    if [ "$DRY" = 1 ]; then
        OUT=${OUT:-$ROOT/$GP/dry-out}; WORK=$ROOT/$GP/dry-work; PY=${GPU_PROOF_PY:-$(here_python)}
        PROV=(--provider cuda --allow-fallback); NOCUDA=(--no-cuda); QPROV=(--provider cpu)  # quantize has no --allow-fallback
    else
        : "${OUT:?OUT is not set (the device tool sets it; GPU_PROOF_DRY=1 for a dry run)}"
        WORK=$stash/work; PY=${GPU_PROOF_PY:-python3}
        PROV=(--provider cuda); QPROV=(--provider cuda)
    fi
    rm -rf "$WORK"; mkdir -p "$OUT" "$WORK/results"; RES=$WORK/results
    remote_run_body "$stash" "$whl" "$nparts" "$budget" "$t_start" 2>&1 | tee "$OUT/run.log"
    return "${PIPESTATUS[0]}"
}

remote_run_body() {
    local stash=$1 whl=$2 nparts=$3 budget=$4 t_start=$5 i m
    echo "== remote-run $(date -u +%FT%TZ) on $(uname -n) (dry=$DRY); budget ${budget}s; $("$PY" -V 2>&1)"

    echo "== join the $nparts parts and check the wheel's SHA-256"
    local joined="$stash/$whl"
    for ((i = 1; i <= nparts; i++)); do cat "$stash/part-$i"; done > "$joined"
    (cd "$stash" && grep " $whl\$" "$ROOT/$GP/parts.sha256" | sha256sum -c -) || { echo "joined wheel: SHA-256 MISMATCH"; exit 4; }

    echo "== install (pip --no-index --no-deps --target), cnnkit itself from its wheel"
    local site=$stash/site t0=$SECONDS
    rm -rf "$site"
    if [ "$DRY" = 1 ]; then
        # Python here is not 3.12: install the cp312 wheels for 3.12 into a scratch target (proves they install),
        # and run the steps with this Python's own onnxruntime-gpu and the cnnkit wheel.
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$stash/site312" --upgrade \
            --python-version 3.12 --implementation cp --only-binary=:all: "${PLATFORMS[@]}" \
            "$joined" "$GP"/payload/wheels/*.whl || echo "DRY: the cp312 install FAILED"
        find "$stash/site312" -maxdepth 1 -name '*.dist-info' -printf '   installed for cp312: %f\n' | sort
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$GP"/payload/wheels/cnnkit-*.whl
    else
        "$PY" -m pip uninstall -y -q onnxruntime 2>&1 | tail -1   # one onnxruntime import name: the GPU build's
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
            "$joined" "$GP"/payload/wheels/*.whl || echo "pip install FAILED"
    fi
    rm -f "$joined"
    echo "   installed in $(( SECONDS - t0 )) s"
    export PYTHONPATH=$site PATH=$site/bin:$PATH CNNKIT_OFFLINE=1 PYTHONUNBUFFERED=1 COLUMNS=160
    H=("$PY" "$ROOT/scripts/gpu_proof.py")
    # ONNX Runtime's CUDA provider loads libcublasLt.so.13, libcudart.so.13, libcudnn.so.9 ... from the pip
    # nvidia-* packages (PyTorch's: site-packages/nvidia/cu13/lib, nvidia/cudnn/lib): put their folders on the
    # loader's path. If a CUDA session still does not come up, add every folder that holds those libraries.
    local nv
    nv=$("$PY" - <<'EOF'
import glob, os, sys
dirs = sorted({d for p in sys.path if p.endswith(("site-packages", "dist-packages"))
               for d in glob.glob(os.path.join(p, "nvidia", "*", "lib")) + glob.glob(os.path.join(p, "nvidia", "*", "*", "lib"))})
print(":".join(dirs + [d for d in ("/usr/local/nvidia/lib64",) if os.path.isdir(d)]))
EOF
)
    export LD_LIBRARY_PATH="${nv}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "   LD_LIBRARY_PATH: ${nv:-<no nvidia pip libraries found>}"
    if ! timeout 60 "${H[@]}" cuda-check && [ "$DRY" != 1 ]; then
        local more
        more=$(find /opt /usr/local /usr/lib /usr/lib64 -maxdepth 8 \( -name 'libcublasLt.so.13*' -o -name 'libcudnn.so.9*' \
               -o -name 'libcudart.so.13*' -o -name 'libcurand.so.10*' -o -name 'libcufft.so.12*' \) -printf '%h\n' 2>/dev/null \
               | sort -u | paste -sd:)
        echo "   CUDA did not come up: adding ${more:-nothing found}"
        [ -n "$more" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$more"
        timeout 60 "${H[@]}" cuda-check
    fi
    CK=(cnnkit)
    command -v cnnkit >/dev/null || CK=("$PY" -m cnnkit)

    cd "$WORK" || exit 2
    cp "$ROOT/$GP/payload/models/seed/model.onnx" seed.onnx
    cp "$ROOT/$GP/payload/models/mnv2/model.onnx" mnv2.onnx
    cp "$ROOT/$GP/payload/models/mnv2_224/model.onnx" mnv2_224.onnx
    ln -s "$ROOT/$GP/payload/images" images
    ln -s "$ROOT/$GP/payload/refs" refs
    local M=(seed.onnx mnv2.onnx) ALL=(seed.onnx mnv2.onnx mnv2_224.onnx)
    local QUICK=(--min-time 0.5 --min-iterations 30)
    # Batch sizes: the headline sweep, MobileNetV2 224's, the flag variations', FP16's, the CPU baseline's, and
    # where the doubling probe starts and stops (seed CNN and MobileNetV2 96; 224).
    local B_CUDA=1,8,64,256,1024,4096 B_224=1,8,64,256,1024 B_FLAG=1,64,256 B_TUNE=1,64,256 B_FP16=1,64,1024 B_CPU=1,8,64,256 B_CPU224=1,8,32
    local L0=8192 LCAP=1048576 L224=2048 L224CAP=32768
    if [ "$DRY" = 1 ]; then   # the CPU here: small sizes, to check the flow, not to measure
        B_CUDA=1,8,64 B_224=1,2 B_FLAG=1,8 B_TUNE=1 B_FP16=1,8 B_CPU=1,8 B_CPU224=1; L0=128 LCAP=256 L224=2 L224CAP=2
    fi

    echo "== steps (budget ends at $(date -u -d "@$DEADLINE" +%T) UTC)"
    step check-deps 30 "${H[@]}" check-deps
    step env 60 "${H[@]}" env results/env.json --manifest "$ROOT/$GP/payload/manifest.txt"
    step doctor 60 "${CK[@]}" doctor --provider cuda --json results/doctor.json --force
    step bench-cuda 150 "${CK[@]}" bench "${M[@]}" "${PROV[@]}" --batch-sizes "$B_CUDA" --json results/bench-cuda.json --force
    step bench-cuda-224 100 "${CK[@]}" bench mnv2_224.onnx "${PROV[@]}" --batch-sizes "$B_224" "${QUICK[@]}" \
        --json results/bench-cuda-224.json --force
    step bench-cpu 100 "${CK[@]}" bench "${M[@]}" --provider cpu --batch-sizes "$B_CPU" "${QUICK[@]}" \
        --json results/bench-cpu.json --force
    step bench-cpu-224 100 "${CK[@]}" bench mnv2_224.onnx --provider cpu --batch-sizes "$B_CPU224" --min-time 0.5 \
        --min-iterations 10 --json results/bench-cpu-224.json --force
    step compare-seed 60 "${H[@]}" compare refs/seed.npz seed.onnx --json results/compare-seed.json "${NOCUDA[@]}"
    step compare-mnv2 60 "${H[@]}" compare refs/mnv2.npz mnv2.onnx --json results/compare-mnv2.json "${NOCUDA[@]}"
    step quantize-seed 90 "${CK[@]}" quantize seed.onnx -o seed.fp16.onnx --mode fp16 "${QPROV[@]}" \
        --json results/quantize-seed.json --force
    step quantize-mnv2 90 "${CK[@]}" quantize mnv2.onnx -o mnv2.fp16.onnx --mode fp16 --data-dir images "${QPROV[@]}" \
        --json results/quantize-mnv2.json --force
    # Random weights: constant outputs, so cnnkit refuses the variant (parity on constant outputs proves
    # nothing); --keep-failed writes it marked failed (exit 1, expected), for timing only.
    step quantize-mnv2_224 90 "${CK[@]}" quantize mnv2_224.onnx -o mnv2_224.fp16.onnx --mode fp16 "${QPROV[@]}" \
        --keep-failed --json results/quantize-mnv2_224.json --force
    step parity-seed-fp16 60 "${CK[@]}" parity seed.onnx seed.fp16.onnx "${PROV[@]}" --json results/parity-seed-fp16.json --force
    local F=() m
    for m in seed mnv2 mnv2_224; do [ -f "$m.fp16.onnx" ] && F+=("$m.onnx" "$m.fp16.onnx"); done
    (( ${#F[@]} )) || F=(seed.onnx)
    step bench-cuda-fp16 150 "${CK[@]}" bench "${F[@]}" "${PROV[@]}" --batch-sizes "$B_FP16" "${QUICK[@]}" \
        --json results/bench-cuda-fp16.json --force
    # The gpu-marked tests: the seed CNN's fixtures use the model made by prepare (no TensorFlow there).
    STEP_TAIL=12 step pytest-gpu 150 env CNNKIT_TEST_SEED_CNN="$ROOT/$GP/payload/models/seed" \
        bash -c "cd '$ROOT' && '$PY' -m pytest -m gpu tests/gpu -p no:cacheprovider -v"
    step bench-cuda-graph 100 "${CK[@]}" bench "${ALL[@]}" "${PROV[@]}" --cuda-graph --batch-sizes "$B_FLAG" "${QUICK[@]}" \
        --json results/bench-cuda-graph.json --force
    step bench-cuda-heuristic 100 "${CK[@]}" bench "${ALL[@]}" "${PROV[@]}" --cudnn-conv-algo-search heuristic \
        --batch-sizes "$B_FLAG" "${QUICK[@]}" --json results/bench-cuda-heuristic.json --force
    step bench-cuda-tune 150 "${CK[@]}" bench "${ALL[@]}" "${PROV[@]}" --tune --batch-sizes "$B_TUNE" "${QUICK[@]}" \
        --json results/bench-cuda-tune.json --force
    echo "--- [largest] doubling the batch from $L0 (seed CNN, MobileNetV2 96) and $L224 (224) until a run fails"
    : > "$RES/largest.tsv"
    local t_l=$SECONDS
    largest seed.onnx "$L0" "$LCAP"; largest mnv2.onnx "$L0" "$LCAP"; largest mnv2_224.onnx "$L224" "$L224CAP"
    printf 'largest\t0\t%s\t(doubling probe, cuDNN heuristic search, 1 warm-up + 3 runs per size: largest.tsv)\n' \
        "$(( SECONDS - t_l ))" >> "$RES/steps.tsv"
    # Last, as the least needed: what IO binding saves (host<->device copies timed).
    step bench-cuda-copies 100 "${CK[@]}" bench "${ALL[@]}" "${PROV[@]}" --include-copies --batch-sizes "$B_FLAG" "${QUICK[@]}" \
        --json results/bench-cuda-copies.json --force

    echo "== summary ($(( $(date +%s) - t_start )) s since the start)"
    "${H[@]}" summary "$RES" --json "$OUT/summary.json" | tee "$OUT/summary.txt"
    "${H[@]}" pack "$RES" "$OUT/results.tgz"
    "${H[@]}" check-out "$OUT"
    echo "remote-run: done in $(( $(date +%s) - t_start )) s"
}

docs() {
    local from=${1:?the folder the files came back to} secs=${2:-}
    local py; py=$(here_python)
    rm -rf "$GP/returned"; mkdir -p "$GP/returned"
    tar -xzf "$from/results.tgz" -C "$GP/returned" || die "no results.tgz in $from"
    local args=("$GP/returned/results" docs/benchmarks-gpu.md)
    [ -n "$secs" ] && args+=(--gpu-seconds "$secs")
    "$py" scripts/gpu_proof.py docs "${args[@]}"
}

case "${1:-}" in
    prepare) prepare ;;
    plan) plan ;;
    remote-part) shift; remote_part "$@" ;;
    remote-run) remote_run ;;
    docs) shift; docs "$@" ;;
    *) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 2 ;;
esac
