#!/usr/bin/env bash
# Sourced by the GPU-machine run scripts (device-check.sh, predictor-run.sh, attn-run.sh) from the
# folder benchmarks/gpu/stage.sh prepared, which holds a copy of this file beside the run script:
# device_run_setup makes $out (OUT, default ./out), unpacks the Java runtime (the folder's
# jre25.tar.xz, else the shared one beside the folder) to /tmp/jre, and sets java, flags (the JVM
# options of every run), cp (the folder's test classes and lib/*.jar) and junit (the JUnit console
# launcher on that classpath; callers add --details=tree where they want the tree) and op_tests (the
# launcher's selection of the GPU op tests, one class per backend capability); nvidia-smi and
# `java -version` go to $out/env.txt. Needs $here: the staged folder.

device_run_setup() {
  local jre j
  out=${OUT:-$PWD/out}
  mkdir -p "$out" /tmp/jre
  jre=$here/jre25.tar.xz
  [[ -f $jre ]] || jre=$here/../jre25.tar.xz
  tar -C /tmp/jre -xJf "$jre"
  java=/tmp/jre/jre25/bin/java
  flags=(--add-modules=jdk.incubator.vector --enable-native-access=ALL-UNNAMED -Xmx16g)
  cp="$here/test-classes"
  for j in "$here"/lib/*.jar; do cp="$cp:$j"; done
  { nvidia-smi; "$java" -version; } > "$out/env.txt" 2>&1
  junit=("$java" "${flags[@]}" -jar "$here/lib/junit-platform-console-standalone.jar" execute --class-path "$cp"
         --disable-banner --disable-ansi-colors)
  op_tests=()
  for j in Memory Blas Layers Attention Optimizer Sparse Predictor; do op_tests+=(--select-class "org.sparselora.cuda.Gpu${j}Test"); done
}
