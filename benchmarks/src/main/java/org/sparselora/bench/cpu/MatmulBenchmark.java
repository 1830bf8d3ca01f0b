package org.sparselora.bench.cpu;

import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;

/**
 * JMH: the CPU backend's GEMM in the layouts a training step uses — {@code x·Wᵀ} (forward,
 * transB) and {@code dy·W} (input gradient) — at the step benchmark model's shapes. GFLOP/s =
 * 2·M·K·N / (time per op); {@link CpuStepReport} prints the same figures next to the measured peak.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-Xmx2g"})
public class MatmulBenchmark {
    @Param({"1024x512x1408", "1024x1408x512", "256x512x512"})
    public String mkn;

    @Param({"true", "false"})
    public boolean transB;

    private CpuBackend be;
    private Tensor a, b, c;

    @Setup(Level.Trial)
    public void setup() {
        String[] p = mkn.split("x");
        int m = Integer.parseInt(p[0]), k = Integer.parseInt(p[1]), n = Integer.parseInt(p[2]);
        be = new CpuBackend();
        a = be.fromFloats(CpuStepReport.rand(m * k), DType.F32, m, k);
        b = transB ? be.fromFloats(CpuStepReport.rand(n * k), DType.F32, n, k) : be.fromFloats(CpuStepReport.rand(k * n), DType.F32, k, n);
        c = be.empty(DType.F32, m, n);
    }

    @TearDown(Level.Trial)
    public void tearDown() { be.close(); }

    @Benchmark
    public Tensor matmul() {
        be.matmul(c, a, false, b, transB, 1, 0);
        return c;
    }
}
