#!/usr/bin/env bash
# Assemble a CPU libtorch 2.9.0 directory (the layout torch-sys expects: include/, lib/,
# share/cmake/, build-version) from the PyPI torch 2.9.0 wheel, for `--features tch`.
#
# Usage: scripts/slm/setup_libtorch.sh [DEST]          (DEST defaults to target/libtorch)
#   TORCH_DIR=/path/to/site-packages/torch  use this installed torch package instead of looking
#                                          for one (it must be version 2.9.0)
# Without TORCH_DIR it takes /opt/pyref's torch if that is 2.9.0, else it runs
# `pip download torch==2.9.0 --no-deps` (plus the two small NVIDIA runtime wheels the CPU library
# needs, see below) into a temporary folder and unpacks the wheels there.
#
# Why the result is not just a copy of torch/lib: the torch 2.9.0 wheel on PyPI for x86_64 Linux is
# the CUDA 12.8 build. Its libtorch.so has a DT_NEEDED on libtorch_cuda.so (1 GB, which needs
# cuBLAS, cuDNN, NCCL, ...), and torch-sys links libtorch_cuda whenever that file is in lib/. We
# take only the CPU half:
#   - libtorch_cpu.so, libc10.so (and the wheel's libgomp.so.1): all of the CPU operators;
#   - libcudart.so.12 and libcupti.so.12: libtorch_cpu.so of the CUDA build has DT_NEEDED entries
#     on both (the profiler and a few device queries), so it does not load without them. They are
#     the CUDA *runtime* and profiling libraries only; they load without a GPU or a CUDA driver
#     (this machine has neither) and about 9 MB together;
#   - a libtorch.so built here that only depends on libtorch_cpu.so (as libtorch.so of the
#     official CPU build does): the wheel's libtorch.so defines no torch symbols of its own, it
#     only pulls libtorch_cpu and libtorch_cuda in.
# A build-version file holds the wheel's version (2.9.0+cu128), which passes torch-sys 0.22's
# check for 2.9.0.
set -euo pipefail

want=2.9.0
root=$(cd "$(dirname "$0")/../.." && pwd)
dest=${1:-$root/target/libtorch}

version_of() { # torch package dir -> its __version__
    sed -n "s/^__version__ = '\(.*\)'$/\1/p" "$1/version.py"
}

tmp=""
cleanup() { if [ -n "$tmp" ]; then rm -rf "$tmp"; fi; }
trap cleanup EXIT

torch=${TORCH_DIR:-}
if [ -z "$torch" ]; then
    for py in /opt/pyref/lib/python3*/site-packages/torch; do
        if [ -f "$py/version.py" ] && [ "$(version_of "$py" | cut -d+ -f1)" = "$want" ]; then
            torch=$py
        fi
    done
fi
if [ -z "$torch" ]; then
    tmp=$(mktemp -d)
    echo "setup_libtorch: no torch $want found; pip download torch==$want --no-deps into $tmp" >&2
    python3 -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -d "$tmp" \
        "torch==$want" nvidia-cuda-runtime-cu12 nvidia-cuda-cupti-cu12 >&2
    for whl in "$tmp"/*.whl; do
        python3 -m zipfile -e "$whl" "$tmp/site" >&2
    done
    torch=$tmp/site/torch
fi

version=$(version_of "$torch")
if [ "${version%%+*}" != "$want" ]; then
    echo "setup_libtorch: $torch is torch $version, torch-sys 0.22 (tch 0.22, burn 0.22.1) needs $want" >&2
    exit 1
fi
site=$(dirname "$torch")
echo "setup_libtorch: assembling a CPU libtorch from torch $version at $torch into $dest" >&2

rm -rf "$dest.partial"
mkdir -p "$dest.partial/lib" "$dest.partial/share"
cp -r "$torch/include" "$dest.partial/include"
cp -r "$torch/share/cmake" "$dest.partial/share/cmake"
for lib in libtorch_cpu.so libc10.so libgomp.so.1; do
    if [ -f "$torch/lib/$lib" ]; then
        cp "$torch/lib/$lib" "$dest.partial/lib/"
    fi
done

# Whatever libtorch_cpu.so needs that is neither in the folder nor a system library: for the CUDA
# wheel this is libcudart.so.12 and libcupti.so.12, shipped by the nvidia-* wheels next to torch.
for need in $(readelf -d "$torch/lib/libtorch_cpu.so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    if [ -e "$dest.partial/lib/$need" ] || ldconfig -p | grep -q "^[[:space:]]*$need "; then
        continue
    fi
    found=$(find "$site/nvidia" "$torch/lib" -name "$need" 2>/dev/null | head -n1 || true)
    if [ -z "$found" ]; then
        echo "setup_libtorch: libtorch_cpu.so needs $need, which is neither under $site/nvidia nor a system library" >&2
        exit 1
    fi
    cp -L "$found" "$dest.partial/lib/"
    echo "setup_libtorch: added $need (from $found), a load-time dependency of libtorch_cpu.so" >&2
done

if readelf -d "$torch/lib/libtorch.so" | grep -q 'libtorch_cuda'; then
    # An empty library whose only job is to pull libtorch_cpu.so in, like the CPU build's.
    gcc -shared -o "$dest.partial/lib/libtorch.so" -x c /dev/null -Wl,-soname,libtorch.so \
        -Wl,--no-as-needed -L"$dest.partial/lib" -ltorch_cpu
else
    cp "$torch/lib/libtorch.so" "$dest.partial/lib/"
fi
echo "$version" > "$dest.partial/build-version"
printf 'CPU libtorch assembled by scripts/slm/setup_libtorch.sh from %s (torch %s)\n' \
    "$torch" "$version" > "$dest.partial/SOURCE"

rm -rf "$dest"
mv "$dest.partial" "$dest"

# Show that the CPU library resolves every dependency from this folder and the system alone.
if LD_LIBRARY_PATH="$dest/lib" ldd "$dest/lib/libtorch.so" | grep -q 'not found'; then
    LD_LIBRARY_PATH="$dest/lib" ldd "$dest/lib/libtorch.so" >&2
    echo "setup_libtorch: some dependencies are missing (above)" >&2
    exit 1
fi
echo "setup_libtorch: done ($(du -sh "$dest" | cut -f1)); export these before cargo --features tch:" >&2
echo "export LIBTORCH=$dest LD_LIBRARY_PATH=$dest/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
