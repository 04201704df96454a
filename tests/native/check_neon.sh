#!/usr/bin/env bash
# Builds tests/native/neon_matches_scalar.cpp for aarch64 and runs it: the NEON kernel variant
# against the scalar one, bit for bit.
#
#   bash tests/native/check_neon.sh            # on aarch64: native build against the installed torch
#                                              # on x86: cross build, run under qemu-aarch64
#
# On x86 it needs aarch64-linux-gnu-g++ and qemu-aarch64 (Debian: g++-aarch64-linux-gnu,
# qemu-user) and downloads the aarch64 torch wheel of the installed torch version (~450 MB,
# cached in $NEON_CHECK_DIR, default ~/.cache/binary_flavr/neon_check). PyPI's aarch64 wheel is
# a CUDA build: the CUDA runtime and CUPTI it links are replaced by stubs that fail every call
# (nothing here calls them), and qemu gets an ARM /proc/cpuinfo, which torch's CPU detection reads.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source_file="$here/neon_matches_scalar.cpp"
flags=(-std=c++20 -O2 -ffp-contract=off -fopenmp -DBITCONV_KERNELS_HASH=neon_check)

if [ "$(uname -m)" = aarch64 ]; then
  read -r include lib < <(python -c "import os, torch.utils.cpp_extension as c; print(c.include_paths()[0], c.library_paths()[0])")
  out="$(mktemp -d)"
  g++ "${flags[@]}" -I"$include" -I"$include/torch/csrc/api/include" "$source_file" -o "$out/neon_check" \
    -L"$lib" -ltorch_cpu -lc10 -Wl,-rpath,"$lib"
  exec "$out/neon_check"
fi

for tool in aarch64-linux-gnu-g++ aarch64-linux-gnu-gcc qemu-aarch64; do
  command -v "$tool" >/dev/null || { echo "check_neon.sh: $tool not found; install g++-aarch64-linux-gnu and qemu-user, or run on aarch64" >&2; exit 2; }
done
version="$(python -c "import torch; print(torch.__version__.split('+')[0])")"
py="$(python -c "import sys; print(f'{sys.version_info.major}{sys.version_info.minor}')")"
work="${NEON_CHECK_DIR:-$HOME/.cache/binary_flavr/neon_check}/torch-$version"
mkdir -p "$work"
if [ ! -f "$work/torch/lib/libtorch_cpu.so" ]; then
  pip download "torch==$version" --platform manylinux_2_28_aarch64 --python-version "$py" --only-binary=:all: \
    --no-deps -q -d "$work"
  python - "$work" <<'EOF'
import glob, sys, zipfile
work = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{work}/torch-*aarch64*.whl")[0])
wheel.extractall(work, [n for n in wheel.namelist() if n.startswith(("torch/lib/", "torch/include/"))])
EOF
fi

# Stubs for the CUDA libraries libtorch_cpu.so links (same versioned symbols, every call fails).
mkdir -p "$work/stubs"
for lib in $(aarch64-linux-gnu-readelf -d "$work/torch/lib/libtorch_cpu.so" | sed -n 's/.*Shared library: \[\(lib\(cudart\|cupti\)\.so\.[0-9]*\)\]/\1/p'); do
  [ -f "$work/stubs/$lib" ] && continue
  symbols="$(aarch64-linux-gnu-readelf -W --dyn-syms "$work/torch/lib/libtorch_cpu.so" | awk '$7 == "UND" {print $8}' |
             sed -n "s/@$lib.*//p" | sort -u)"
  { for s in $symbols; do echo "int $s(void) { return 100; }"; done; } > "$work/stubs/$lib.c"
  { echo "$lib { global:"; for s in $symbols; do echo "  $s;"; done; echo "  local: *; };"; } > "$work/stubs/$lib.map"
  aarch64-linux-gnu-gcc -shared -fPIC "$work/stubs/$lib.c" -o "$work/stubs/$lib" -Wl,-soname,"$lib" \
    -Wl,--version-script="$work/stubs/$lib.map"
done

# qemu prefix: aarch64 libc, and what torch's CPU detection reads (an ARM Neoverse N1 x 2).
root="$work/qemu-root"
mkdir -p "$root/proc" "$root/sys/devices/system/cpu/cpu0/regs/identification"
ln -sfn /usr/aarch64-linux-gnu/lib "$root/lib"
echo 0x00000000413fd0c1 > "$root/sys/devices/system/cpu/cpu0/regs/identification/midr_el1"
for cpu in 0 1; do
  printf 'processor\t: %s\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' "$cpu"
done > "$root/proc/cpuinfo"

aarch64-linux-gnu-g++ "${flags[@]}" -I"$work/torch/include" -I"$work/torch/include/torch/csrc/api/include" \
  "$source_file" -o "$work/neon_check" -L"$work/torch/lib" -L"$work/stubs" -ltorch_cpu -lc10 \
  -Wl,-rpath-link,"$work/torch/lib" -Wl,-rpath-link,"$work/stubs"
LD_LIBRARY_PATH="$work/torch/lib:$work/stubs" exec qemu-aarch64 -L "$root" "$work/neon_check"
