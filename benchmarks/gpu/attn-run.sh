#!/usr/bin/env bash
# Runs on the GPU machine over the folder benchmarks/gpu/stage-attn.sh prepared (.devrun/attn, with
# .devrun/jre25.tar.xz beside it): the attention tests (GpuAttentionTest: every kernel against
# CpuBackend) and the kernel catalogue check, then AttentionBench (fwd/bwd timings of every kernel at
# the Llama-3-8B and 1B head shapes, agreement with the GEMM path), then compute-sanitizer memcheck
# over the fused kernels at odd shapes. Logs to $OUT. Exit status: the tests'.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/device-run-lib.sh"
device_run_setup
T=org.sparselora.cuda.GpuAttentionTest
timeout 70 "${junit[@]}" --details=tree --select-method "$T#attentionForwardBackwardGqaWithPadding" \
  --select-method "$T#attentionFusedKernelsAcrossTileEdges" --select-method "$T#attentionCachedMatchesCpu" \
  --select-class org.sparselora.cuda.KernelCatalogueTest --reports-dir "$out/junit" > "$out/tests.log" 2>&1
status=$?
grep -E "tests (successful|failed)|✘|MethodSource|expected|rel err" "$out/tests.log" | head -40
[[ ${BENCH:-1} == 1 ]] && timeout 40 "$java" "${flags[@]}" -cp "$cp" org.sparselora.cuda.AttentionBench 2>&1 | tee "$out/attention-bench.log"
if [[ ${MEMCHECK:-1} == 1 ]] && command -v compute-sanitizer >/dev/null; then
  timeout 30 compute-sanitizer --tool memcheck --print-limit 10 "$java" "${flags[@]}" -cp "$cp" org.sparselora.cuda.AttentionBench memcheck > "$out/memcheck.log" 2>&1
  echo "memcheck exit $?"; grep -E "ERROR SUMMARY|Invalid|done" "$out/memcheck.log" | head -12
fi
# Per-kernel device times and occupancy of the fused kernels (Nsight Compute, when installed)
ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1 || true)
if [[ ${PROFILE:-1} == 1 && -n $ncu ]]; then
  timeout 60 "$ncu" --kernel-name regex:'flash3|attn_bwd_prep|attn_dq' --metrics \
    gpu__time_duration.sum,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,launch__occupancy_limit_registers,launch__occupancy_limit_shared_mem,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,lts__t_sectors_op_red.sum,smsp__inst_executed_op_ldsm.sum \
    "$java" "${flags[@]}" -cp "$cp" org.sparselora.cuda.AttentionBench profile > "$out/ncu.log" 2>&1
  echo "ncu exit $?"; grep -E "flash3|attn_|duration|warps_active|hmma|registers_per|limit|red.sum|ldsm" "$out/ncu.log" | head -80
else
  echo "no ncu"; ls /usr/local/ | head; command -v nsys || true
fi
echo "attn-run: tests exit status $status"
exit "$status"
