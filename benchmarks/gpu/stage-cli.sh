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
lib=$(mktemp -d)
trap 'rm -rf "$lib"' EXIT
mkdir "$lib/lib"
cp proto/target/sparselora-proto-*.jar engine/target/sparselora-engine-*.jar cuda-kernels/target/sparselora-cuda-kernels-*.jar \
   actors/target/sparselora-actors-*.jar "$lib/lib/"
rm -f "$lib"/lib/*-sources.jar "$lib"/lib/*-tests.jar

# jar $1 re-stored (no compression: xz packs the classes of all jars far tighter than deflate per file)
# as $2, without the entries matching the zip patterns in ${@:3}
restore_jar() {
  local src=$1 out=$2 x; shift 2
  x=$(mktemp -d)
  (cd "$x" && unzip -q -o "$src" </dev/null && { [[ $# == 0 ]] || rm -rf $@; } && zip -q -0 -r -X "$out" .)   # $@ unquoted: globbed in $x
  rm -rf "$x"
}
{ tr ':' '\n' < actors/target/classpath.txt; echo; } | while read -r j; do   # the file has no final newline
  [[ -n $j ]] || continue
  case "$j" in
    */sparselora-*) ;;                                                   # our modules: copied from target/ above
    *jcuda-natives*) restore_jar "$j" "$lib/lib/jcuda-natives-driver-only.jar" 'lib/libJNvPTXCompiler-*' 'lib/libJCudaRuntime-*' 'lib/libJNvrtc-*' ;;
    */ai/djl/huggingface/tokenizers/*) restore_jar "$j" "$lib/lib/$(basename "$j")" 'native/lib/win-*' 'native/lib/osx-*' native/lib/linux-aarch64 nlp ;;
    *grpc-netty-shaded*) restore_jar "$j" "$lib/lib/$(basename "$j")" META-INF/native ;;
    *.jar) restore_jar "$j" "$lib/lib/$(basename "$j")" ;;
    *) echo "stage-cli.sh: unexpected classpath entry $j" >&2; exit 1 ;;
  esac
done
# every jar the CLI's runtime classpath names is there, plus the actors jar (only native libraries were left out)
(( $(ls "$lib"/lib/*.jar | wc -l) == $(tr ':' '\n' < actors/target/classpath.txt | grep -c .) + 1 )) \
  || { echo "stage-cli.sh: staged jars differ from actors/target/classpath.txt:" >&2
       diff <(tr ':' '\n' < actors/target/classpath.txt | grep . | xargs -n1 basename | sort) <(ls "$lib/lib" | sort) >&2; exit 1; }
tar -C "$lib" -cf - lib | xz -9e -T0 > "$dest.tmp/lib.tar.xz"   # -9e: 2 MB under -6, which the 64 MiB carry limit needs

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
