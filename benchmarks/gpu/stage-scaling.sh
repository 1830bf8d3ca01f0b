#!/usr/bin/env bash
# Stages everything benchmarks/gpu/scaling-check.sh (issue 6: data-parallel SparseLoRA on 1, 2 and 4
# GPUs) needs on the GPU machine (no Java, no network) into the git-ignored folder $DEVRUN/scaling
# (default .devrun/scaling of this checkout): the CLI's runtime classpath (the actors jar and its
# runtime jars, trimmed like stage-cli.sh: jcuda-natives to the driver-API library, DJL's tokenizer
# without its native library — a random model with synthetic data never loads a tokenizer —,
# grpc-netty-shaded without tcnative), a copy of scaling-check.sh (so the device
# command does not depend on the branch the checkout holds), the llama3-8b-math10k sparsity config
# and the tiny CPU stand-in (config.json + sparsity). No shared data: the run uses a random-init
# model drawn on each GPU and synthetic timing batches.
#
# Then: device tool, kind nvidia-h200-x4 (or -x2), carry [".devrun/jre25.tar.xz", ".devrun/scaling"],
# command `bash .devrun/scaling/scaling-check.sh`. The script checks that the tracked tree + carry
# fit the device tool's 64 MiB and prints the sizes.
# Usage: benchmarks/gpu/stage-scaling.sh       (DEVRUN=/work/main/.devrun to stage into the lead's checkout)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
devrun=${DEVRUN:-$root/.devrun}
dest=$devrun/scaling
limit_mib=35

mkdir -p "$devrun"
./mvnw -q -o -pl actors -am -DskipTests package     # also writes actors/target/classpath.txt (runtime scope)
rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
trap 'rm -rf "$dest.tmp"' EXIT
. benchmarks/gpu/pack-cli-lib.sh
pack_cli_lib "$dest.tmp/lib.tar.xz" native nlp

cp benchmarks/gpu/scaling-check.sh configs/sparsity/llama3-8b-math10k.yaml "$dest.tmp/"
cp benchmarks/gpu/scaling/tiny-config.json benchmarks/gpu/scaling/tiny-sparsity.yaml "$dest.tmp/"

size=$(du -sm "$dest.tmp" | cut -f1)
if (( size > limit_mib )); then
  echo "stage-scaling.sh: $dest.tmp holds ${size} MiB, over the ${limit_mib} MiB budget" >&2
  exit 1
fi
rm -rf "$dest"; mv "$dest.tmp" "$dest"
[[ -f $devrun/jre25.tar.xz ]] || /work/shared/device/build-jre.sh "$devrun"
# what the device tool ships: tracked files + the two carried paths, at most 64 MiB
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carry=$(du -sb "$devrun/jre25.tar.xz" "$dest" | awk '{s+=$1} END {print s}')
total=$((tracked + carry))
printf 'tracked tree %.1f MiB + carry %.1f MiB = %.1f MiB of the 64 MiB limit\n' \
  "$(echo "$tracked / 1048576" | bc -l)" "$(echo "$carry / 1048576" | bc -l)" "$(echo "$total / 1048576" | bc -l)"
(( total <= 64 * 1048576 )) || { echo "stage-scaling.sh: the tracked tree + carry are over the device tool's 64 MiB" >&2; exit 1; }
du -sh "$devrun/jre25.tar.xz" "$dest"
echo "device tool: kind nvidia-h200-x4 (or nvidia-h200-x2), carry [\".devrun/jre25.tar.xz\", \".devrun/scaling\"], command: bash .devrun/scaling/scaling-check.sh"
