#!/usr/bin/env bash
# Compiles every kernel source in src/main/cuda/*.cu to PTX and writes it under
# src/main/resources/org/sparselora/cuda/ptx/{sm_90,compute_80}/NAME.ptx, which is committed so a
# build without nvcc still works. Each PTX starts with two comment lines: the sha256 of its sources
# (common.cuh followed by NAME.cu, byte for byte) and the nvcc release that made it; PtxFreshnessTest
# fails when a shipped PTX is stale against the sources.
# Usage: cuda-kernels/build-ptx.sh [OUT_ROOT]   (OUT_ROOT defaults to the resources folder;
#        PTX_ARCHS="sm_90" limits the targets, as the freshness test does)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$here/src/main/cuda
out=${1:-$here/src/main/resources/org/sparselora/cuda/ptx}
command -v nvcc >/dev/null || { echo "build-ptx.sh: nvcc not found on PATH" >&2; exit 1; }
release=$(nvcc --version | grep -o 'release [0-9.]*, V[0-9.]*')
archs=${PTX_ARCHS:-sm_90 compute_80}
for arch in $archs; do mkdir -p "$out/$arch"; done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for cu in "$src"/*.cu; do
  name=$(basename "$cu" .cu)
  sha=$(cat "$src/common.cuh" "$cu" | sha256sum | cut -d' ' -f1)
  for arch in $archs; do
    nvcc -std=c++17 -O3 -arch=$arch -ptx "$cu" -o "$tmp/$name.ptx"
    { echo "// source-sha256: $sha"; echo "// nvcc: $release"; cat "$tmp/$name.ptx"; } > "$tmp/$name.$arch.ptx"
    mv "$tmp/$name.$arch.ptx" "$out/$arch/$name.ptx"
  done
  echo "built $name ($sha)"
done
