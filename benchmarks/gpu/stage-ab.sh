#!/usr/bin/env bash
# Stages an A/B timing of two commits (benchmarks/gpu/ab-bench.sh) into $DEVRUN/ab (default
# /work/main/.devrun/ab): builds OLD and NEW (commits or branches) in scratch worktrees, copies each
# build's engine, cuda-kernels and benchmarks jars into ab/old and ab/new and NEW's runtime jars
# into ab/lib. Then call the device tool with carry [".devrun/jre25.tar.xz", ".devrun/ab"] and
# command `bash .devrun/ab/ab-bench.sh`.
# Usage: benchmarks/gpu/stage-ab.sh OLD NEW
set -euo pipefail
old=${1:?usage: stage-ab.sh OLD NEW}; new=${2:?usage: stage-ab.sh OLD NEW}
root=$(cd "$(dirname "$0")/../.." && pwd)
devrun=${DEVRUN:-/work/main/.devrun}
dest=$devrun/ab
rm -rf "$dest"; mkdir -p "$dest/lib" "$dest/old" "$dest/new"
for side in old new; do
  rev=${!side}
  wt=$(mktemp -d)
  git -C "$root" worktree add -q --detach "$wt" "$rev"
  (cd "$wt" && . bin/java25.sh && benchmarks/stage-device-bench.sh >/dev/null)
  cp "$wt"/.devrun/bench/lib/sparselora-*.jar "$dest/$side/"
  rm -f "$dest/$side"/*-tests.jar
  # the old build's copy of the config: the new parser must read what the old one did
  [[ $side == old ]] && cp "$wt/configs/sparsity/llama3-8b-math10k.yaml" "$dest/"
  if [[ $side == new ]]; then
    # only what StepBenchmark loads: not the plotting library, JMH's or the tests' jars (the carry is 64 MiB)
    for j in "$wt"/.devrun/bench/lib/*.jar; do
      case "$(basename "$j")" in
        sparselora-*|VectorGraphics2D*|animated-gif*|commons-*|fontbox*|graphics2d*|pdfbox*|xchart*|junit-*|opentest4j*|apiguardian*|jna-*|gson*|error_prone*|jopt-simple*) ;;
        *) cp "$j" "$dest/lib/" ;;
      esac
    done
  fi
  [[ -f $devrun/jre25.tar.xz ]] || cp "$wt/.devrun/jre25.tar.xz" "$devrun/"
  git -C "$root" worktree remove --force "$wt"
done
cp "$root/benchmarks/gpu/ab-bench.sh" "$dest/"
du -sm "$devrun/jre25.tar.xz" "$dest"
