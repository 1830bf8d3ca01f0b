#!/usr/bin/env bash
# Stages the attention device run (issue 5) into ONE git-ignored folder the device tool carries:
# /work/main/.devrun/attn/ (default; first argument overrides) with the engine and cuda-kernels jars,
# their runtime jars, the JUnit console launcher, the cuda-kernels test classes and run.sh (a copy of
# benchmarks/gpu/attn-run.sh). The Java runtime is the shared .devrun/jre25.tar.xz (built by
# stage.sh / device/build-jre.sh; this script only checks it is there).
# Then: device tool with carry [".devrun/jre25.tar.xz", ".devrun/attn"] and command
# `bash .devrun/attn/run.sh` (logs in $OUT: env.txt, tests.log, attention-bench.log, memcheck.log, junit/).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dest=${1:-/work/main/.devrun/attn}
m2=${M2_REPO:-$HOME/.m2/repository}
jcuda=12.0.0
console=1.14.4
cd "$root"
[[ -f $(dirname "$dest")/jre25.tar.xz ]] || { echo "stage-attn.sh: $(dirname "$dest")/jre25.tar.xz missing (run benchmarks/gpu/stage.sh once)" >&2; exit 1; }
./mvnw -q -o -pl cuda-kernels -am package -DskipTests
mkdir -p "$dest/lib"
rm -rf "$dest/lib"/* "$dest/test-classes"
cp engine/target/sparselora-engine-*.jar cuda-kernels/target/sparselora-cuda-kernels-*.jar "$dest/lib/"
cp -r cuda-kernels/target/test-classes "$dest/test-classes"
cp "$m2/org/jcuda/jcuda/$jcuda/jcuda-$jcuda.jar" "$dest/lib/"
tmpcp=$(mktemp)
./mvnw -q -o -pl engine dependency:build-classpath -Dmdep.outputFile="$tmpcp" -Dmdep.includeScope=runtime
tr ':' '\n' < "$tmpcp" | grep -vE '/ai/djl/|/jna/|/commons-|/gson/|/junit/|apiguardian|opentest4j|error_prone' \
  | while read -r j; do [[ -f $j ]] && cp "$j" "$dest/lib/"; done
rm -f "$tmpcp"
cp "$m2/org/junit/platform/junit-platform-console-standalone/$console/junit-platform-console-standalone-$console.jar" \
  "$dest/lib/junit-platform-console-standalone.jar"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && unzip -q "$m2/org/jcuda/jcuda-natives/$jcuda/jcuda-natives-$jcuda-linux-x86_64.jar" \
  && rm -f lib/libJNvPTXCompiler-* lib/libJCudaRuntime-* lib/libJNvrtc-* \
  && zip -qr "$dest/lib/jcuda-natives-$jcuda-linux-x86_64-driver-only.jar" .)
cp benchmarks/gpu/attn-run.sh "$dest/run.sh"
du -sh "$dest"
size=$(du -sm "$dest" | cut -f1)
(( size <= 40 )) || { echo "stage-attn.sh: $dest is ${size} MiB, over its 40 MiB budget" >&2; exit 1; }
