#!/usr/bin/env bash
# On the GPU machine (staged by benchmarks/gpu/stage-checks.sh), the checks that need torch or a GPU
# beyond the kernel tests: (1) files written by our HF/PEFT writers load in transformers + PEFT and
# the merged checkpoint gives PEFT's logits; (2) SparseLoRA learns on the GPU: stories260K fine-tuned
# on GSM8K for 200 steps, dense LoRA vs SparseLoRA (sliced, cut), loss curves to $OUT/curves.jsonl.
set -uo pipefail
out=${OUT:-$PWD/out}; mkdir -p "$out" /tmp/jre
python3 engine/src/test/python/hf_interop_check.py .devrun/hf-interop 2>&1 | tee "$out/hf-interop.log"
echo "hf_interop_check exit ${PIPESTATUS[0]}"
tar -C /tmp/jre -xJf .devrun/jre25.tar.xz
cp=$(ls .devrun/bench/lib/*.jar | tr '\n' ':')
timeout ${LEARN_TIMEOUT:-300} /tmp/jre/jre25/bin/java --add-modules=jdk.incubator.vector --enable-native-access=ALL-UNNAMED -Xmx16g -cp "$cp" \
  org.sparselora.bench.sparse.SparseParity --backend gpu --shared .devrun/shared --steps ${STEPS:-200} --curves "$out/curves.jsonl" 2>&1 \
  | grep -v '^WARNING' | tee "$out/learning-check.log"
