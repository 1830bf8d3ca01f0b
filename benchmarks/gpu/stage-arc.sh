#!/usr/bin/env bash
# Stages the ARC run (benchmarks/gpu/arc-run.sh) for a GPU machine (no Java, no network) into the
# git-ignored $DEVRUN/arc (default: .devrun/arc of this checkout): the arc command's runtime
# classpath packed by pack-cli-lib.sh, the ARC-AGI-1 and ARC-AGI-2 training sets from ../shared/data
# (pretraining data and the held-out validation split; never committed), the SparseLoRA config for
# the ARC base model, and arc-run.sh itself. Then: device tool, carry [".devrun/jre25.tar.xz",
# ".devrun/arc"], command `bash .devrun/arc/arc-run.sh [TASKS_DIR]` (default: the validation split).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
devrun=${DEVRUN:-$root/.devrun}
shared=${SPARSELORA_SHARED:-}
if [[ -z $shared ]]; then
  for c in "$root/../shared" "$root/../../shared"; do [[ -d $c/data ]] && { shared=$c; break; }; done
  shared=${shared:-$root/../shared}
fi
for d in arc-agi/training arc-agi-2/training; do
  [[ -d $shared/data/$d ]] || { echo "stage-arc.sh: $shared/data/$d is missing (set SPARSELORA_SHARED to the folder holding data/)" >&2; exit 2; }
done
dest=$devrun/arc
./mvnw -q -o -pl arc-agi -am -DskipTests package     # also writes arc-agi/target/classpath.txt (runtime scope)
rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
. benchmarks/gpu/pack-cli-lib.sh
# the plotting library and its PDF/SVG backends: the GPU machine's runtime has no java.desktop, so the
# loss plot is skipped there anyway (with a warning); nor the Prometheus text exposition (only a server
# scrapes it); the 64 MiB carry needs the room
CLI_MODULE=arc-agi CLI_DROP='^(xchart|pdfbox|pdfbox-io|fontbox|graphics2d|VectorGraphics2D|animated-gif-lib|commons-logging|prometheus-metrics-exposition-formats)-' pack_cli_lib "$dest.tmp/lib.tar.xz" 'native/lib/win-*' 'native/lib/osx-*' native/lib/linux-aarch64 nlp
tar -C "$shared/data" --transform 's,^arc-agi/training,arc1,;s,^arc-agi-2/training,arc2,' -cJf "$dest.tmp/data.tar.xz" arc-agi/training arc-agi-2/training
cp "configs/sparsity/arc-${PRESET:-small}.yaml" "$dest.tmp/arc-sparsity.yaml"   # for the preset arc-run.sh pretrains (PRESET)
cp benchmarks/gpu/arc-run.sh "$dest.tmp/arc-run.sh"
rm -rf "$dest"; mv "$dest.tmp" "$dest"
[[ -f $devrun/jre25.tar.xz ]] || /work/shared/device/build-jre.sh "$devrun"
du -sm "$devrun/jre25.tar.xz" "$dest"
