#!/usr/bin/env bash
# Runs on the GPU machine, from the repo root, over the folder benchmarks/gpu/stage.sh prepared
# (.devrun/gpu, carried with .devrun by the device tool: `bash .devrun/gpu/device-check.sh`): unpacks the Java runtime, runs the GPU correctness tests
# (GpuBackendTest: every op against CpuBackend; GpuTrainingStepTest: whole tiny-model dense and sparse
# training steps against CpuBackend) plus the CPU-side catalogue and pool checks with the
# JUnit console launcher, then the per-kernel timing table (KernelBench). Logs and JUnit XML go to
# $OUT (defaults to ./out when run by hand). Exit status: the tests' (the bench is informational).
# KERNEL_BENCH=0 / MEMCHECK=0 leave out the timing table / the memory checker.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
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
"$java" "${flags[@]}" -jar "$here/lib/junit-platform-console-standalone.jar" execute \
  --class-path "$cp" --select-class org.sparselora.cuda.GpuBackendTest --select-class org.sparselora.cuda.GpuTrainingStepTest \
  --select-class org.sparselora.cuda.KernelCatalogueTest --select-class org.sparselora.cuda.DevicePoolTest --select-class org.sparselora.cuda.GpuSlidingWindowTest \
  --details=tree --disable-banner --disable-ansi-colors --reports-dir "$out/junit" 2>&1 | tee "$out/gpu-tests.log"
status=${PIPESTATUS[0]}
[[ ${KERNEL_BENCH:-1} == 1 ]] && timeout 240 "$java" "${flags[@]}" -cp "$cp" org.sparselora.cuda.KernelBench 2>&1 | tee "$out/kernel-bench.log"
# Memory checker over the attention and sparse-op tests (bounded: informational, not the exit status)
if [[ ${MEMCHECK:-1} == 1 ]] && command -v compute-sanitizer >/dev/null; then
  timeout 90 compute-sanitizer --tool memcheck --print-limit 20 "$java" "${flags[@]}" \
    -jar "$here/lib/junit-platform-console-standalone.jar" execute --class-path "$cp" --disable-banner --disable-ansi-colors \
    --select-method org.sparselora.cuda.GpuBackendTest#attentionForwardBackwardGqaWithPadding \
    --select-method org.sparselora.cuda.GpuBackendTest#topKDeterministicWithTies \
    --select-method org.sparselora.cuda.GpuBackendTest#gatherScatterRowsAndCols > "$out/memcheck.log" 2>&1
  echo "memcheck exit $? (124 = cut off by the time limit); summary:"; grep -E "ERROR SUMMARY|Invalid|tests (successful|failed)" "$out/memcheck.log" | head -20
fi
echo "device-check: tests exit status $status"
exit "$status"
