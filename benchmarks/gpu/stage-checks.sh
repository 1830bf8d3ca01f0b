#!/usr/bin/env bash
# Stages, into the git-ignored .devrun/ of this checkout, what benchmarks/gpu/checks.sh needs on the
# GPU machine besides .devrun/bench (benchmarks/stage-device-bench.sh): the files the Java writers
# produce for the HF/PEFT interop check (.devrun/hf-interop), and a copy of the few shared-data files
# the GPU learning check reads (.devrun/shared/data/…; ../shared never travels and is never committed).
# Then call the device tool with carry [".devrun/jre25.tar.xz", ".devrun/bench", ".devrun/hf-interop",
# ".devrun/shared"] and command `bash benchmarks/gpu/checks.sh`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
shared=${SPARSELORA_SHARED:-$root/../shared}
bash benchmarks/stage-device-bench.sh
./mvnw -q -o -pl engine -am test -Dtest=HfInteropFilesTest -Dsurefire.failIfNoSpecifiedTests=false
rm -rf .devrun/hf-interop .devrun/shared
cp -r engine/target/hf-interop .devrun/hf-interop
for f in models/stories260K/stories260K.bin tokenizers/llama2c-tok512/tok512.bin gsm8k/train_llm_adapters_format.json; do
  mkdir -p ".devrun/shared/data/$(dirname "$f")"
  cp "$shared/data/$f" ".devrun/shared/data/$f"
done
du -sh .devrun/*
