#!/usr/bin/env bash
# Prepares everything the GPU machine needs for device-check.sh inside ONE git-ignored folder
# (default /work/main/.devrun, the checkout the device tool ships; ≤ 60 MiB): a Java 25 runtime (the
# GPU machine has none) at .devrun/jre25.tar.xz (shared with other device scripts, built once), and
# under .devrun/gpu/ the cuda-kernels and engine jars (and the engine's test-jar: the test helpers
# such as TinyModels that the GPU tests share), the runtime jars (jcuda, jcuda-natives with
# only libJCudaDriver kept, the engine's Jackson/EJML jars, the JUnit console launcher), the
# cuda-kernels test classes, the script and device-run-lib.sh (which the script sources).
# Usage (from the repo root): benchmarks/gpu/stage.sh [DEVRUN_DIR]
# Then call the device tool with carry [".devrun"] and command `bash .devrun/gpu/device-check.sh`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
devrun=${1:-/work/main/.devrun}
# STAGE_NAME: the folder under $devrun (default gpu); STAGE_RUN=SRC:NAME: the script copied into it
# (default benchmarks/gpu/device-check.sh:device-check.sh) — stage-attn.sh stages its run this way
dest=$devrun/${STAGE_NAME:-gpu}
run=${STAGE_RUN:-benchmarks/gpu/device-check.sh:device-check.sh}
m2=${M2_REPO:-$HOME/.m2/repository}
jcuda=12.0.0
console=1.14.4
cd "$root"
./mvnw -q -o -pl cuda-kernels -am package -DskipTests
mkdir -p "$dest/lib"
rm -rf "$dest/lib"/* "$dest/test-classes"
# sparselora-engine-*.jar includes the engine's test-jar (-tests.jar) with the shared test helpers
cp engine/target/sparselora-engine-*.jar cuda-kernels/target/sparselora-cuda-kernels-*.jar "$dest/lib/"
# (unzip exits non-zero when the named entry is missing; no grep -q in a pipe under pipefail)
unzip -l "$dest"/lib/sparselora-engine-*-tests.jar org/sparselora/engine/model/TinyModels.class >/dev/null 2>&1 \
  || { echo "stage.sh: the engine test-jar with the shared test helpers (TinyModels) was not built" >&2; exit 1; }
cp -r cuda-kernels/target/test-classes "$dest/test-classes"
cp "$m2/org/jcuda/jcuda/$jcuda/jcuda-$jcuda.jar" "$dest/lib/"
# the engine's runtime jars (Jackson YAML for sparsity configs, EJML for the SVD predictor), minus
# DJL's tokenizers and their helpers (18 MB of natives no GPU run needs)
tmpcp=$(mktemp)
./mvnw -q -o -pl engine dependency:build-classpath -Dmdep.outputFile="$tmpcp" -Dmdep.includeScope=runtime
tr ':' '\n' < "$tmpcp" | grep -vE '/ai/djl/|/jna/|/commons-|/gson/|/junit/|apiguardian|opentest4j|error_prone' \
  | while read -r j; do [[ -f $j ]] && cp "$j" "$dest/lib/"; done
rm -f "$tmpcp"
cjar="$m2/org/junit/platform/junit-platform-console-standalone/$console/junit-platform-console-standalone-$console.jar"
[[ -f $cjar ]] || ./mvnw -q dependency:get -Dartifact=org.junit.platform:junit-platform-console-standalone:$console
cp "$cjar" "$dest/lib/junit-platform-console-standalone.jar"
# jcuda-natives without the 24 MB PTX compiler, runtime and NVRTC libraries: only the driver API is used
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && unzip -q "$m2/org/jcuda/jcuda-natives/$jcuda/jcuda-natives-$jcuda-linux-x86_64.jar" \
  && rm -f lib/libJNvPTXCompiler-* lib/libJCudaRuntime-* lib/libJNvrtc-* \
  && zip -qr "$dest/lib/jcuda-natives-$jcuda-linux-x86_64-driver-only.jar" .)
[[ -f $devrun/jre25.tar.xz ]] || /work/shared/device/build-jre.sh "$devrun"
cp "${run%%:*}" "$dest/${run##*:}"
cp benchmarks/gpu/device-run-lib.sh "$dest/"      # the run scripts source it from their folder
du -sh "$devrun/jre25.tar.xz" "$dest"/* | sort -h
# what the device call carries: the JRE and this folder
size=$(du -scm "$devrun/jre25.tar.xz" "$dest" | tail -1 | cut -f1)
(( size <= 60 )) || { echo "stage.sh: $devrun/jre25.tar.xz + $dest come to ${size} MiB, over the 60 MiB budget" >&2; exit 1; }
