#!/usr/bin/env bash
# Same-run A/B timing of two builds of the engine on the GPU machine: the recorded 8B q,k,v,o training
# step (dense LoRA and SparseLoRA with the published math10k config), old and new build alternating
# ROUNDS times, so a refactor can be shown to keep the speed (the same card, the same minutes).
# Staged by benchmarks/gpu/stage-ab.sh: $AB/old/*.jar and $AB/new/*.jar (engine, cuda-kernels,
# benchmarks) over the shared runtime jars in $AB/lib. Logs and JSON lines go to $OUT.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$PWD/out}; mkdir -p "$out" /tmp/jre
[[ -x /tmp/jre/jre25/bin/java ]] || tar -C /tmp/jre -xJf "$here/../jre25.tar.xz"
java=/tmp/jre/jre25/bin/java
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/env.txt" 2>&1
lib=$(ls "$here"/lib/*.jar | tr '\n' ':')
for round in $(seq 1 "${ROUNDS:-2}"); do
  for build in old new; do
    cp=$(ls "$here/$build"/*.jar | tr '\n' ':')$lib
    echo "=== round $round: $build ===" | tee -a "$out/ab.log"
    timeout "${AB_TIMEOUT:-240}" "$java" --add-modules=jdk.incubator.vector --enable-native-access=ALL-UNNAMED -Xmx100g -cp "$cp" \
      org.sparselora.bench.step.StepBenchmark --model 8b --targets qkvo --graphs recorded \
      --sparsity "$here/llama3-8b-math10k.yaml" --warmup "${WARMUP:-15}" --steps "${STEPS:-30}" --json "$out/ab-$build.jsonl" 2>&1 | tee -a "$out/ab.log"
  done
done
