#!/usr/bin/env bash
# Stages what benchmarks/device-bench.sh needs on the GPU machine (which has no Java and no network)
# into the git-ignored folder .devrun/ of this checkout: .devrun/jre25.tar.xz (a Java 25 runtime,
# built once) and .devrun/bench/ (the engine, cuda-kernels and benchmarks jars and their runtime
# jars — jcuda-natives reduced to the driver-API library, no DJL). Then call the device tool with
# carry [".devrun/jre25.tar.xz", ".devrun/bench"] and command `bash benchmarks/device-bench.sh`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dest=.devrun/bench
m2=${M2_REPO:-$HOME/.m2/repository}
./mvnw -q -o -pl benchmarks -am -DskipTests package dependency:build-classpath -Dmdep.outputFile="$root/.devrun/bench.cp"
rm -rf "$dest"; mkdir -p "$dest/lib"
cp engine/target/sparselora-engine-*.jar cuda-kernels/target/sparselora-cuda-kernels-*.jar benchmarks/target/sparselora-benchmarks-*.jar "$dest/lib/"
tr ':' '\n' < .devrun/bench.cp | while read -r j; do
  case "$j" in
    *sparselora-*|*tokenizers*|*jmh*|*/api-*) ;;                      # our modules (copied above), DJL natives, JMH
    *jcuda-natives*) tmp=$(mktemp -d); (cd "$tmp" && unzip -q "$j" && rm -f lib/libJNvPTXCompiler-* lib/libJCudaRuntime-* lib/libJNvrtc-* \
                       && zip -qr "$root/$dest/lib/jcuda-natives-driver-only.jar" .); rm -rf "$tmp" ;;
    *.jar) cp "$j" "$dest/lib/" ;;
  esac
done
[[ -f .devrun/jre25.tar.xz ]] || /work/shared/device/build-jre.sh .devrun
du -sh .devrun/jre25.tar.xz "$dest"
