#!/usr/bin/env bash
# Runs on the GPU machine from the repo root (staged by benchmarks/stage-device-bench.sh): this
# project's whole training steps (dense LoRA, SparseLoRA) at the Llama-3-8B and Llama-3.2-1B shapes,
# then the PyTorch + PEFT peer on the same shapes, in one run so the ratios compare like with like.
# Logs and JSON lines go to $OUT.
set -uo pipefail
out=${OUT:-$PWD/out}; mkdir -p "$out" /tmp/jre
tar -C /tmp/jre -xJf .devrun/jre25.tar.xz
java=/tmp/jre/jre25/bin/java
cp=$(ls ${BENCH_LIB:-.devrun/bench/lib}/*.jar | tr '\n' ':')
run() { "$java" --add-modules=jdk.incubator.vector --enable-native-access=ALL-UNNAMED -Xmx100g -cp "$cp" org.sparselora.bench.step.StepBenchmark "$@"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/env.txt" 2>&1
W=${WARMUP:-20}; S=${STEPS:-30}
timeout ${OURS_TIMEOUT:-300} bash -c "$(declare -f run); java=$java cp=$cp; run --model 8b --targets ${TARGETS:-qkvo,all} --sparsity configs/sparsity/llama3-8b-math10k.yaml --profile ${PROFILE:-3} --warmup $W --steps $S --json $out/ours.jsonl" 2>&1 | tee "$out/ours-8b.log"
[[ ${SKIP_1B:-0} == 1 ]] || timeout 120 bash -c "$(declare -f run); java=$java cp=$cp; run --model 1b --targets all --sparsity benchmarks/configs/llama3.2-1b-math10k-scaled.yaml --warmup $W --steps $S --json $out/ours.jsonl" 2>&1 | tee "$out/ours-1b.log"
if [[ ${PEER:-1} == 1 ]]; then
  PYTHONUNBUFFERED=1 timeout ${PEER_TIMEOUT:-200} python3 benchmarks/peer/peer_bench.py --matrix --warmup $W --steps $S --out "$out/peer.jsonl" 2>&1 | tail -40 | tee "$out/peer.log"
fi
