#!/usr/bin/env bash
# Stages everything benchmarks/gpu/cli-check.sh needs on the GPU machine (no Java, no network) into
# the git-ignored folder $DEVRUN/cli (default: .devrun/cli of this checkout; the lead's is
# /work/main/.devrun): the CLI's runtime classpath (the actors jar and its runtime jars, trimmed to
# what a Linux x86-64 run can use), a copy of cli-check.sh itself (so the device command does not
# depend on which branch the checkout holds), and the few shared-data files the run reads —
# stories260K + its llama2.c tokenizer, a 400-record GSM8K slice, 24 held-out GSM8K texts to score —
# plus, with CLI_CACHE=1, the demo's cached base model (it saves building it there; off by default: 64 MiB limit).
# Nothing from ../shared is ever committed: it lands only under the git-ignored .devrun.
#
# Trimmed: jcuda-natives to the driver-API library (as the other stage scripts); DJL tokenizers to
# its linux-x86_64 native (the demo's base model has a tokenizer.json, so the HF tokenizer runs
# there — cli-check.sh runs DJL offline with the CPU flavour, so it never tries to download one);
# grpc-netty-shaded without its tcnative (OpenSSL) natives, which only TLS serving would load.
#
# Then: device tool, carry [".devrun/jre25.tar.xz", ".devrun/cli"], command `bash .devrun/cli/cli-check.sh`.
# Usage: benchmarks/gpu/stage-cli.sh            (DEVRUN=/work/main/.devrun to stage into the lead's checkout)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
devrun=${DEVRUN:-$root/.devrun}
shared=${SPARSELORA_SHARED:-}
if [[ -z $shared ]]; then   # ../shared beside the checkout (/work/main), or beside the worktrees' parent (/work/wt/x)
  for c in "$root/../shared" "$root/../../shared"; do [[ -d $c/data ]] && { shared=$c; break; }; done
  shared=${shared:-$root/../shared}
fi
dest=$devrun/cli
limit_mib=35
for f in models/stories260K/stories260K.bin tokenizers/llama2c-tok512/tok512.bin gsm8k/train_llm_adapters_format.json; do
  [[ -f $shared/data/$f ]] || { echo "stage-cli.sh: $shared/data/$f is missing (set SPARSELORA_SHARED to the folder holding data/)" >&2; exit 2; }
done

mkdir -p "$devrun"
./mvnw -q -o -pl actors -am -DskipTests package     # also writes actors/target/classpath.txt (runtime scope)
rm -rf "$dest.tmp"; mkdir -p "$dest.tmp/data"
. benchmarks/gpu/pack-cli-lib.sh
pack_cli_lib "$dest.tmp/lib.tar.xz" 'native/lib/win-*' 'native/lib/osx-*' native/lib/linux-aarch64 nlp

cp "$shared/data/models/stories260K/stories260K.bin" "$shared/data/tokenizers/llama2c-tok512/tok512.bin" "$dest.tmp/data/"
# training slice: the first 400 GSM8K records; held out for score: the next 24 (instruction + answer as one text)
python3 - "$shared/data/gsm8k/train_llm_adapters_format.json" "$dest.tmp/data" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
with open(sys.argv[2] + "/gsm8k-400.json", "w") as f:
    json.dump(d[:400], f, indent=0)
with open(sys.argv[2] + "/gsm8k-score.jsonl", "w") as f:
    for r in d[400:424]:
        f.write(json.dumps({"text": r["instruction"] + "\n" + r["output"]}) + "\n")
EOF
# The demo's cached base model (3 MB) saves ~20 s of CPU on the device but does not fit the device
# tool's 64 MiB limit (tracked tree + the JRE + this folder); CLI_CACHE=1 carries it anyway.
if [[ ${CLI_CACHE:-0} == 1 ]]; then
  cache=${SPARSELORA_CACHE:-$HOME/.cache/sparselora}
  for b in "$cache"/demo-base-*; do
    [[ -f $b/model.safetensors ]] && { mkdir -p "$dest.tmp/cache"; cp -r "$b" "$dest.tmp/cache/"; }
  done
fi
cp benchmarks/gpu/cli-check.sh "$dest.tmp/cli-check.sh"

size=$(du -sm "$dest.tmp" | cut -f1)
if (( size > limit_mib )); then
  echo "stage-cli.sh: $dest.tmp holds ${size} MiB, over the ${limit_mib} MiB budget:" >&2
  du -sk "$dest.tmp"/* "$dest.tmp"/data/* | sort -n >&2
  exit 1
fi
rm -rf "$dest"; mv "$dest.tmp" "$dest"
[[ -f $devrun/jre25.tar.xz ]] || /work/shared/device/build-jre.sh "$devrun"
# what the device tool ships: tracked files + the two carried paths, at most 64 MiB
total=$(( $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) + $(du -sb "$devrun/jre25.tar.xz" "$dest" | awk '{s+=$1} END {print s}') ))
(( total <= 64 * 1048576 )) || echo "stage-cli.sh: WARNING the tracked tree + carry come to $((total / 1048576)) MiB, over the device tool's 64 MiB" >&2
du -sh "$devrun/jre25.tar.xz" "$dest"
echo "device tool: carry [\".devrun/jre25.tar.xz\", \".devrun/cli\"], command: bash .devrun/cli/cli-check.sh"
