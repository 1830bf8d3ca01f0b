#!/usr/bin/env bash
# Runs on the GPU machine, from the repo root, over the folder benchmarks/gpu/stage.sh prepared
# (.devrun/gpu, carried with .devrun by the device tool: `bash .devrun/gpu/device-check.sh`): unpacks the Java runtime, runs the GPU correctness tests
# (the GPU op tests Gpu*Test: every op against CpuBackend; GpuTrainingStepTest: whole tiny-model dense and sparse
# training steps against CpuBackend) plus the CPU-side catalogue and pool checks with the
# JUnit console launcher, then the per-kernel timing table (KernelBench). Logs and JUnit XML go to
# $OUT (defaults to ./out when run by hand). Exit status: the tests' (the bench is informational).
# KERNEL_BENCH=0 / MEMCHECK=0 leave out the timing table / the memory checker.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/device-run-lib.sh"
device_run_setup
"${junit[@]}" --details=tree "${op_tests[@]}" --select-class org.sparselora.cuda.GpuTrainingStepTest \
  --select-class org.sparselora.cuda.GpuFullStepTest --select-class org.sparselora.cuda.GpuBatchGenerationTest --select-class org.sparselora.cuda.GpuQloraTest \
  --select-class org.sparselora.cuda.KernelCatalogueTest --select-class org.sparselora.cuda.DevicePoolTest --select-class org.sparselora.cuda.GpuSlidingWindowTest \
  --reports-dir "$out/junit" 2>&1 | tee "$out/gpu-tests.log"
status=${PIPESTATUS[0]}
[[ ${KERNEL_BENCH:-1} == 1 ]] && timeout 240 "$java" "${flags[@]}" -cp "$cp" org.sparselora.cuda.KernelBench 2>&1 | tee "$out/kernel-bench.log"
# Memory checker over the attention and sparse-op tests (bounded: informational, not the exit status)
if [[ ${MEMCHECK:-1} == 1 ]] && command -v compute-sanitizer >/dev/null; then
  timeout 90 compute-sanitizer --tool memcheck --print-limit 20 "${junit[@]}" \
    --select-method org.sparselora.cuda.GpuAttentionTest#attentionForwardBackwardGqaWithPadding \
    --select-method org.sparselora.cuda.GpuPredictorTest#topKDeterministicWithTies \
    --select-method org.sparselora.cuda.GpuSparseTest#gatherScatterRowsAndCols > "$out/memcheck.log" 2>&1
  echo "memcheck exit $? (124 = cut off by the time limit); summary:"; grep -E "ERROR SUMMARY|Invalid|tests (successful|failed)" "$out/memcheck.log" | head -20
fi
echo "device-check: tests exit status $status"
exit "$status"
