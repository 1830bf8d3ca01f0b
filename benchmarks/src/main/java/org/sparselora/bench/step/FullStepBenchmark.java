package org.sparselora.bench.step;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.RandomWeights;
import org.sparselora.engine.train.FullTrainer;
import org.sparselora.engine.train.LlamaFullModel;
import org.sparselora.engine.train.OptimizerConfig;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Times whole full-parameter training steps (every weight trains: forward, backward with weight
 * gradients, clipping and the multi-tensor AdamW over fp32 masters; recorded as CUDA graphs on the
 * GPU, as training runs) at the Llama-3.2-1B shape or one of the small pretraining presets, on
 * random weights and a random token batch where every position carries loss (pretraining). Prints
 * one line per run — median ms/step, tokens/s, MFU (6·N·tokens + causal attention, as the peer
 * counts it), peak device memory — and appends a JSON line to {@code --json}. The PyTorch peer of
 * the same step is benchmarks/peer/full_peer_bench.py, run in the same device call.
 */
@Command(name = "FullStepBenchmark", mixinStandardHelpOptions = true, description = "Time full-parameter training steps.")
public final class FullStepBenchmark implements Callable<Integer> {
    @Option(names = "--backend", description = "gpu or cpu (default ${DEFAULT-VALUE})") String backend = "gpu";
    @Option(names = "--model", description = "1b, tiny-1m, small-8m or base-30m (default ${DEFAULT-VALUE})") String model = "1b";
    @Option(names = "--vocab", description = "vocabulary of a preset model (default ${DEFAULT-VALUE})") int vocab = 512;
    @Option(names = "--batch", description = "rows per step (default ${DEFAULT-VALUE})") int batch = 8;
    @Option(names = "--seq", description = "tokens per row (default ${DEFAULT-VALUE})") int seq = 512;
    @Option(names = "--warmup", description = "untimed steps first (default ${DEFAULT-VALUE})") int warmup = 10;
    @Option(names = "--steps", description = "timed steps (default ${DEFAULT-VALUE})") int steps = 20;
    @Option(names = "--peak-tflops", description = "bf16 GEMM peak for MFU (default ${DEFAULT-VALUE})") double peakTflops = 790;
    @Option(names = "--json", description = "append one JSON line to this file") Path json;

    public static void main(String[] args) { System.exit(new CommandLine(new FullStepBenchmark()).execute(args)); }

    LlamaConfig config() {
        LlamaConfig c = model.equals("1b") ? StepBenchmark.shape("1b") : RandomWeights.preset(model, vocab, 1, 2);
        if (c == null) throw new IllegalArgumentException("--model " + model + ": expected 1b, " + RandomWeights.PRESET_NAMES);
        if (c.maxPositions() < seq) throw new IllegalArgumentException("--seq " + seq + " exceeds the model's " + c.maxPositions() + " positions");
        return c;
    }

    @Override
    public Integer call() throws Exception {
        LlamaConfig cfg = config();
        Backend be = backend.equals("cpu") ? new CpuBackend() : StepBenchmark.gpu();
        RandomWeights src = new RandomWeights(cfg, 42, RandomWeights.Scheme.PRETRAIN);
        long params = 0;
        for (String n : src.names()) params += src.get(n).numel();
        double[] ms = new double[steps];
        try (be; LlamaWeights w = LlamaWeights.upload(be, src)) {
            LlamaModel m = new LlamaModel(be, w);
            Batch b = Batch.synthetic(cfg.vocabSize(), batch, seq, seq, 5);   // every position carries loss
            try (FullTrainer tr = new FullTrainer(new LlamaFullModel(m), src, OptimizerConfig.defaults(warmup + steps), false)) {
                for (int s = 1; s <= warmup + steps; s++) {
                    be.synchronize();
                    long t0 = System.nanoTime();
                    tr.computeGradients(b, s, false);
                    tr.applyUpdate(s, b.outputTokenCount());
                    be.synchronize();
                    if (s > warmup) ms[s - warmup - 1] = (System.nanoTime() - t0) / 1e6;
                }
            }
            double med = median(ms);
            long tokens = (long) batch * seq;
            double flops = 6.0 * params * tokens + 6.0 * 2 * cfg.numLayers() * (double) batch * seq * seq * cfg.hiddenSize();
            double mfu = flops / (med / 1e3) / (peakTflops * 1e12);
            double peak = StepBenchmark.peakGiB(be, "peakMemoryInUse");
            String line = String.format(Locale.ROOT, "%-9s B%d×%d  %s: %.1f ms/step, %.0f tok/s, MFU %.1f%%, peak %.2f GiB (%d params)",
                    model, batch, seq, be.name(), med, tokens / (med / 1e3), 100 * mfu, peak, params);
            System.out.println(line);
            if (json != null)
                Files.writeString(json, String.format(Locale.ROOT,
                        "{\"ours\": \"full\", \"model\": \"%s\", \"params\": %d, \"batch\": %d, \"seq\": %d, \"ms\": %.3f, \"tokens_per_s\": %.1f, \"mfu\": %.4f, \"peak_gib\": %.3f, \"backend\": \"%s\"}%n",
                        model, params, batch, seq, med, tokens / (med / 1e3), mfu, peak, be.name()),
                        StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        }
        return 0;
    }

    private static double median(double[] v) {
        double[] c = v.clone();
        Arrays.sort(c);
        return c.length % 2 == 1 ? c[c.length / 2] : (c[c.length / 2 - 1] + c[c.length / 2]) / 2;
    }
}
