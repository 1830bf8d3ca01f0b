#!/usr/bin/env bash
# Runs on the GPU machine over the folder benchmarks/gpu/stage-predictor.sh prepared (.devrun/predk,
# with .devrun/jre25.tar.xz beside it): the GPU op tests (Gpu*Test: every op against
# CpuBackend, the predictor's new top-k, Gram and expansion kernels among them; GpuTrainingStepTest:
# whole tiny-model dense and sparse steps, the sparse one selecting through ChannelSelection on the
# device) and the kernel catalogue, then PredictorBench (the predictor's ops at the 8B shape, old and
# new forms, device µs from CUDA-graph replays), then compute-sanitizer memcheck over the new
# kernels' tests. Logs to $OUT. Each stage is time-bounded (TEST_S, BENCH_S, MEMCHECK_S seconds) so
# the call ends well inside a short device budget. Exit status: the tests'.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/device-run-lib.sh"
device_run_setup
timeout "${TEST_S:-40}" "${junit[@]}" --details=tree "${op_tests[@]}" --select-class org.sparselora.cuda.GpuTrainingStepTest \
  --select-class org.sparselora.cuda.KernelCatalogueTest --reports-dir "$out/junit" > "$out/tests.log" 2>&1
status=$?
grep -E "tests (successful|failed)|✘|expected|Exception" "$out/tests.log" | head -30
timeout "${BENCH_S:-30}" "$java" "${flags[@]}" -cp "$cp" org.sparselora.cuda.PredictorBench 2>&1 | tee "$out/predictor-bench.log"
if [[ ${MEMCHECK_S:-20} != 0 ]] && command -v compute-sanitizer >/dev/null; then
  T=org.sparselora.cuda.GpuPredictorTest
  timeout "${MEMCHECK_S:-20}" compute-sanitizer --tool memcheck --print-limit 10 "${junit[@]}" --details=tree \
    --select-method "$T#topKRegisterKernelMatchesCpu" --select-method "$T#lowRankGramModesMatchCpu" \
    --select-method "$T#expandGroupChannelsRowsMatchesCpu" --select-method "org.sparselora.cuda.GpuBlasTest#matmulSharedASmallLeftOperand" \
    --select-method "$T#lowRankSwigluScoresOverFewRows" > "$out/memcheck.log" 2>&1
  echo "memcheck exit $? (124 = cut off by the time limit)"; grep -E "ERROR SUMMARY|Invalid|tests (successful|failed)" "$out/memcheck.log" | head -12
fi
echo "predictor-run: tests exit status $status"
exit "$status"
