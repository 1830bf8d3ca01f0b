#!/usr/bin/env bash
# Sourced by stage-cli.sh and stage-scaling.sh: pack_cli_lib OUT_TAR_XZ TOKENIZER_DROP... packs the
# CLI's runtime classpath (actors/target/classpath.txt, written by `./mvnw -pl actors -am package`)
# plus our module jars into one xz tarball `lib/…` for a GPU machine: every jar re-stored without
# compression (xz packs all jars' classes far tighter than deflate per file), jcuda-natives cut to
# the driver-API library, grpc-netty-shaded without its natives, DJL's tokenizers jar without the
# entries TOKENIZER_DROP names (zip-path globs). Fails when a classpath jar is missing from the pack.

# jar $1 re-stored uncompressed as $2, without the entries matching the zip patterns in ${@:3}
restore_jar() {
  local src=$1 out=$2 x; shift 2
  x=$(mktemp -d)
  (cd "$x" && unzip -q -o "$src" </dev/null && { [[ $# == 0 ]] || rm -rf $@; } && zip -q -0 -r -X "$out" .)   # $@ unquoted: globbed in $x
  rm -rf "$x"
}

# CLI_MODULE=arc-agi packs that module's classpath and jar instead (the arc command's CLI);
# CLI_DROP=REGEX leaves out the jars whose file names match (what a run provably never loads).
pack_cli_lib() {
  local out=$1 lib j mod=${CLI_MODULE:-actors}; shift
  local cpfile=$mod/target/classpath.txt
  lib=$(mktemp -d)
  mkdir "$lib/lib"
  cp proto/target/sparselora-proto-*.jar engine/target/sparselora-engine-*.jar cuda-kernels/target/sparselora-cuda-kernels-*.jar \
     actors/target/sparselora-actors-*.jar "$lib/lib/"
  [[ $mod == actors ]] || cp "$mod"/target/sparselora-"$mod"-*.jar "$lib/lib/"
  rm -f "$lib"/lib/*-sources.jar "$lib"/lib/*-tests.jar
  while read -r j; do
    [[ -n $j ]] || continue
    case "$j" in
      */sparselora-*) ;;                                                 # our modules: copied from target/ above
      *) if [[ -n ${CLI_DROP:-} ]] && [[ $(basename "$j") =~ $CLI_DROP ]]; then continue; fi ;;&
      *jcuda-natives*) restore_jar "$j" "$lib/lib/jcuda-natives-driver-only.jar" 'lib/libJNvPTXCompiler-*' 'lib/libJCudaRuntime-*' 'lib/libJNvrtc-*' ;;
      */ai/djl/huggingface/tokenizers/*) restore_jar "$j" "$lib/lib/$(basename "$j")" "$@" ;;
      *grpc-netty-shaded*) restore_jar "$j" "$lib/lib/$(basename "$j")" META-INF/native ;;
      *.jar) restore_jar "$j" "$lib/lib/$(basename "$j")" ;;
      *) echo "pack-cli-lib.sh: unexpected classpath entry $j" >&2; rm -rf "$lib"; return 1 ;;
    esac
  done < <(tr ':' '\n' < "$cpfile"; echo)                             # the file has no final newline
  # every jar the runtime classpath names besides our modules is there (only natives were left out)
  local dropped=0
  [[ -n ${CLI_DROP:-} ]] && dropped=$(tr ':' '\n' < "$cpfile" | grep . | xargs -n1 basename | grep -Ec "$CLI_DROP" || true)
  if (( $(ls "$lib"/lib/*.jar | grep -vc '/sparselora-') + dropped != $(tr ':' '\n' < "$cpfile" | grep . | grep -vc '/sparselora-') )); then
    echo "pack-cli-lib.sh: staged jars differ from $cpfile:" >&2
    diff <(tr ':' '\n' < "$cpfile" | grep . | xargs -n1 basename | sort) <(ls "$lib/lib" | sort) >&2
    rm -rf "$lib"; return 1
  fi
  tar -C "$lib" -cf - lib | xz -9e -T0 > "$out"   # -9e: 2 MB under -6, which the 64 MiB carry limit needs
  rm -rf "$lib"
}
