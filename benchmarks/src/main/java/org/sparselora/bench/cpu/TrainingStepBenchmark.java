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
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.RowBlockMode;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.RandomWeights;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.engine.model.Batch;

/**
 * JMH: one LoRA training step (forward + backward) of {@link BenchModels#stepModel()} on a 4×256
 * batch with 75% context tokens, dense and SparseLoRA (math10k-shaped plan, both frozen_grad modes).
 * FLOPs per step come from {@code sparse.FlopCount}; {@link CpuStepReport} prints them with the speed-up.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 5)
@Measurement(iterations = 3, time = 5)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-Xmx4g"})
public class TrainingStepBenchmark {
    @Param({"dense", "sliced", "cut"})
    public String mode;

    private CpuBackend be;
    private LlamaModel model;
    private LoraAdapter lora;
    private Batch batch;
    private SparsePlan plan;

    @Setup(Level.Trial)
    public void setup() {
        be = new CpuBackend();
        LlamaConfig c = BenchModels.stepModel();
        model = new LlamaModel(be, LlamaWeights.upload(be, new RandomWeights(c, 1)));
        model.setRowBlockMode(RowBlockMode.fromProperty());   // -Dsparselora.rowBlocks
        lora = new LoraAdapter(be, c, BenchModels.lora());
        batch = BenchModels.batch(c, 4, 256, 0.75, 3);
        plan = mode.equals("dense") ? null
                : BenchModels.plan(be, c, batch, BenchModels.math10kScaled(), SparsePlan.FrozenGrad.valueOf(mode.toUpperCase()), 5);
    }

    @TearDown(Level.Trial)
    public void tearDown() { be.close(); }

    @Benchmark
    public double step() {
        double loss = model.forward(batch, lora, plan, 1);
        model.backward();
        return loss;
    }
}
