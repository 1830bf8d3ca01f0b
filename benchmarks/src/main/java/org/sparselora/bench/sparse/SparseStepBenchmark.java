package org.sparselora.bench.sparse;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.RowBlockMode;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.RandomWeights;
import org.sparselora.engine.sparse.SparsePlanner;
import org.sparselora.engine.sparse.SparsityConfig;
import org.sparselora.engine.sparse.SvdPredictor;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.LoraTrainer;
import org.sparselora.engine.train.OptimizerConfig;
import org.sparselora.engine.train.StepResult;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Dense LoRA against SparseLoRA, whole training steps (forward + backward + predictor), on a model
 * large enough that the frozen GEMMs dominate: by default hidden 512, intermediate 1408, 4 layers,
 * batch 4×256 with 75% context tokens, and the published Llama-3-8B Math10K config scaled to the
 * depth (first and last layers dense, MLP 0.99 in the middle layers, attention 0.75 in the deeper
 * half). Random weights (the step's cost does not depend on their values). Prints one table row per
 * variant: measured ms/step, FLOPs/step, FLOP reduction, speed-up, and speed-up ÷ FLOP reduction.
 *
 * <p>Run: {@code java -cp ... org.sparselora.bench.sparse.SparseStepBenchmark [--backend cpu|gpu]}.
 */
@Command(name = "sparse-step-benchmark", mixinStandardHelpOptions = true,
        description = "Dense LoRA vs SparseLoRA training-step time and FLOPs")
public final class SparseStepBenchmark implements Callable<Integer> {

    @Option(names = "--backend", description = "cpu or gpu (default ${DEFAULT-VALUE})") String backend = "cpu";
    @Option(names = "--threads", description = "CPU threads (default: all cores)") int threads = Runtime.getRuntime().availableProcessors();
    @Option(names = "--hidden") int hidden = 512;
    @Option(names = "--intermediate") int intermediate = 1408;
    @Option(names = "--layers") int layers = 4;
    @Option(names = "--heads") int heads = 8;
    @Option(names = "--kv-heads") int kvHeads = 4;
    @Option(names = "--vocab") int vocab = 4096;
    @Option(names = "--batch") int batch = 4;
    @Option(names = "--seq") int seqLen = 256;
    @Option(names = "--context", description = "fraction of context tokens (default ${DEFAULT-VALUE})") double context = 0.75;
    @Option(names = "--lora-rank") int loraRank = 32;
    @Option(names = "--warmup") int warmup = 2;
    @Option(names = "--steps") int steps = 5;

    public static void main(String[] args) {
        System.exit(new CommandLine(new SparseStepBenchmark()).execute(args));
    }

    /** The Math10K config's shape at this depth: MLP 0.99 on all but the first and last layer, attention 0.75 on the deeper middle. */
    static String math10kScaled(int layers, String extra) {
        StringBuilder y = new StringBuilder("start_step: 0\nmode: svd_8\nskip_output_tokens: true\n" + extra + "sparsity:\n");
        for (int l = 1; l < layers - 1; l++) y.append("  layers.").append(l).append(".mlp: 0.99\n");
        for (int l = Math.max(1, layers / 2); l < layers - 1; l++) y.append("  layers.").append(l).append(".self_attn: 0.75\n");
        return y.toString();
    }

    record Row(String name, double ms, double msMin, long flops, long denseFlops, long predictorFlops) {}

    @Override
    public Integer call() {
        LlamaConfig cfg = new LlamaConfig("LlamaForCausalLM", hidden, intermediate, layers, heads, kvHeads, hidden / heads,
                vocab, Math.max(seqLen, 512), 1e-5f, 10000f, null, false, false, 1, 2);
        Backend be = backend.equals("gpu") ? gpu() : new CpuBackend(threads);
        RandomWeights src = new RandomWeights(cfg, 42);
        Batch b = batch(cfg);
        System.out.printf(Locale.ROOT, "model: hidden %d, intermediate %d, %d layers, %d/%d heads, vocab %d; batch %dx%d, %.0f%% context; LoRA r=%d q,k,v,o; backend %s%n",
                hidden, intermediate, layers, heads, kvHeads, vocab, batch, seqLen, 100 * context, loraRank, be.name());
        LlamaModel model = new LlamaModel(be, LlamaWeights.upload(be, src));
        model.setRowBlockMode(RowBlockMode.fromProperty());   // -Dsparselora.rowBlocks
        List<Row> rows = new ArrayList<>();
        rows.add(measure("dense LoRA", model, be, cfg, b, null, src));
        rows.add(measure("SparseLoRA (sliced)", model, be, cfg, b, SparsityConfig.parse(math10kScaled(layers, ""), "math10k-scaled"), src));
        rows.add(measure("SparseLoRA (cut)", model, be, cfg, b, SparsityConfig.parse(math10kScaled(layers, "frozen_grad: cut\n"), "math10k-scaled-cut"), src));
        System.out.println();
        System.out.println(math10kScaled(layers, ""));
        Row dense = rows.get(0);
        // on a shared machine the minimum is the steadier estimate (other load only ever adds time)
        System.out.println("| variant | ms/step (median) | ms/step (min) | GFLOP/step | predictor GFLOP | FLOP reduction | speed-up (median) | speed-up (min) | speed-up (min) / FLOP reduction |");
        System.out.println("|---|---|---|---|---|---|---|---|---|");
        for (Row r : rows) {
            double red = (double) r.denseFlops / r.flops, sp = dense.ms / r.ms, spMin = dense.msMin / r.msMin;
            System.out.printf(Locale.ROOT, "| %s | %.1f | %.1f | %.2f | %.4f | %.2fx | %.2fx | %.2fx | %.2f |%n",
                    r.name, r.ms, r.msMin, r.flops / 1e9, r.predictorFlops / 1e9, red, sp, spMin, spMin / red);
        }
        be.close();
        return 0;
    }

    private static Backend gpu() {
        try {
            return (Backend) Class.forName("org.sparselora.cuda.GpuBackend").getMethod("create", int.class).invoke(null, 0);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("cannot start the GPU backend: " + e.getCause(), e);
        }
    }

    private Row measure(String name, LlamaModel model, Backend be, LlamaConfig cfg, Batch b, SparsityConfig sc, RandomWeights src) {
        LoraAdapter lora = new LoraAdapter(be, cfg, new LoraConfig(loraRank, 2f * loraRank, 0f, LoraConfig.defaults(1).targets(), false, 7));
        LoraTrainer t = new LoraTrainer(model, lora, OptimizerConfig.defaults(warmup + steps));
        SparsePlanner planner = sc == null ? null
                : SparsePlanner.create(be, src, sc, null, warmup + steps, 1, SvdPredictor.Progress.NONE);
        if (planner != null) t.setSparsePlanner(planner);
        double[] ms = new double[steps];
        StepResult last = null;
        for (int s = 0; s < warmup + steps; s++) {
            StepResult r = t.computeGradients(b, s, planner != null);
            t.applyUpdate(s, b.outputTokenCount());
            be.synchronize();
            if (s >= warmup) ms[s - warmup] = r.millis();
            last = r;
        }
        if (planner != null) planner.close();
        t.close();
        lora.close();
        double[] sorted = ms.clone();
        Arrays.sort(sorted);
        System.out.printf(Locale.ROOT, "%s: %s ms%n", name, Arrays.toString(Arrays.stream(ms).map(x -> Math.round(x * 10) / 10.0).toArray()));
        return new Row(name, sorted[steps / 2], sorted[0], last.flops(), last.denseFlops(), last.predictorFlops());
    }

    /** No padding; the first {@code context} fraction of each sequence is prompt (target -100). */
    private Batch batch(LlamaConfig cfg) {
        int n = batch * seqLen, ctx = (int) Math.round(seqLen * context);
        int[] tokens = new int[n], targets = new int[n], positions = new int[n];
        java.util.SplittableRandom r = new java.util.SplittableRandom(5);
        for (int s = 0; s < batch; s++)
            for (int t = 0; t < seqLen; t++) {
                int i = s * seqLen + t;
                tokens[i] = 3 + r.nextInt(cfg.vocabSize() - 3);
                positions[i] = t;
                targets[i] = t < ctx ? Batch.IGNORE : 3 + r.nextInt(cfg.vocabSize() - 3);
            }
        return new Batch(batch, seqLen, tokens, targets, positions, new int[batch]);
    }
}
