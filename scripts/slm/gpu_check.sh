#!/usr/bin/env bash
# The GPU check of the LibTorch build: the SLM parity test and LoRA training steps on CUDA, run on a
# machine with an NVIDIA GPU and a PyTorch CUDA install but no Rust toolchain, with binaries built
# on another machine against the same torch version.
#
# Build (on a machine with cargo; the libtorch folder holds the include/, lib/ and share/cmake/ of
# the PyPI torch wheel that matches the GPU machine's torch, and a build-version file with that
# version; torch-sys 0.22 expects 2.9.0, so another version needs the bypass, and the linker must
# not resolve libtorch_cuda.so's CUDA libraries, which only the GPU machine has):
#
#   export LIBTORCH=/path/to/libtorch LIBTORCH_BYPASS_VERSION_CHECK=1 \
#          CARGO_TARGET_DIR=target/gpu RUSTFLAGS="-C link-arg=-Wl,--allow-shlib-undefined"
#   cargo test --release -p pulserec-slm --features tch --test tch_parity --no-run
#   cargo build --release -p pulserec-slm --features tch --example lora_step
#   # copy target/gpu/release/deps/tch_parity-<hash> as BIN_DIR/tch_parity and
#   # target/gpu/release/examples/lora_step as BIN_DIR/lora_step
#
# Run (on the GPU machine):
#
#   scripts/slm/gpu_check.sh BIN_DIR GGUF OUT_DIR
#
# It loads the GPU machine's own libtorch (`python3 -c 'import torch'` finds it), preloading
# libtorch_cuda.so (the binaries are linked with --as-needed, which drops it, and LibTorch only
# registers CUDA when that library is loaded), then runs
#   1. the tch parity test with the LibTorch side on cuda:0 (PULSEREC_TCH_CUDA=0; flex on the CPU);
#   2. LoRA steps (r8 on q/k/v/o, AdamW, forward + backward, batch 4 x 256) on flex (the CPU) and
#      on tch-cuda:0, interleaved A B A B: the first loss (LoRA B starts at zero, so it is the base
#      model's loss) must agree, the step times give throughput;
#   3. LoRA steps at batch 32 x 256 on tch-cuda:0.
# Logs go to OUT_DIR (parity.log, lora_step.log).
set -uo pipefail
bin=${1:?usage: gpu_check.sh BIN_DIR GGUF OUT_DIR}
gguf=${2:?usage: gpu_check.sh BIN_DIR GGUF OUT_DIR}
out=${3:?usage: gpu_check.sh BIN_DIR GGUF OUT_DIR}
mkdir -p "$out"

torch=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))') || exit 1
python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda,
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")' | tee "$out/env.log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$out/env.log"
nproc | sed 's/^/CPU threads: /' | tee -a "$out/env.log"

export LD_LIBRARY_PATH=$torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_PRELOAD=$torch/lib/libtorch_cuda.so
assets=$(mktemp -d)
mkdir -p "$assets/smollm2"
ln -s "$(realpath "$gguf")" "$assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
export PULSEREC_ASSETS=$assets

status=0
echo "== tch parity, LibTorch on cuda:0" | tee "$out/parity.log"
PULSEREC_TCH_CUDA=0 "$bin/tch_parity" --test-threads 1 --nocapture 2>&1 | tee -a "$out/parity.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

: > "$out/lora_step.log"
for device in flex tch-cuda:0 flex tch-cuda:0; do
    echo "== lora_step --device $device --batch 4 --seq 256 --steps 6" | tee -a "$out/lora_step.log"
    "$bin/lora_step" "$gguf" --device "$device" --batch 4 --seq 256 --steps 6 2>&1 \
        | tee -a "$out/lora_step.log"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
done
echo "== lora_step --device tch-cuda:0 --batch 32 --seq 256 --steps 6" | tee -a "$out/lora_step.log"
"$bin/lora_step" "$gguf" --device tch-cuda:0 --batch 32 --seq 256 --steps 6 2>&1 \
    | tee -a "$out/lora_step.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
exit $status
