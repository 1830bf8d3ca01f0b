package org.sparselora.bench.sparse;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.data.Batcher;
import org.sparselora.engine.data.DatasetFormat;
import org.sparselora.engine.data.DatasetReader;
import org.sparselora.engine.data.ExampleTokenizer;
import org.sparselora.engine.data.TokenizedExample;
import org.sparselora.engine.io.Llama2cCheckpoint;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.RowBlockMode;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.sparse.SparsePlanner;
import org.sparselora.engine.sparse.SparsityConfig;
import org.sparselora.engine.sparse.SvdPredictor;
import org.sparselora.engine.tokenizer.Llama2cTokenizer;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.LoraTrainer;
import org.sparselora.engine.train.OptimizerConfig;
import org.sparselora.engine.train.StepResult;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Accuracy parity, measured: LoRA fine-tuning of the real {@code stories260K} model on GSM8K in the
 * LLM-Adapters format (loss on the response only), the same seed, data order and steps for dense
 * LoRA and SparseLoRA with {@code frozen_grad: sliced} and {@code cut}. Evaluation is dense (the
 * sparsity only approximates the training steps) on held-out records: eval loss per response token
 * and next-token accuracy on the response (the task metric at this model size; GSM8K answer
 * accuracy of a 260K-parameter model is zero either way). Prints one table row per variant.
 */
@Command(name = "sparse-parity", mixinStandardHelpOptions = true, description = "Dense LoRA vs SparseLoRA accuracy on stories260K + GSM8K")
public final class SparseParity implements Callable<Integer> {

    @Option(names = "--shared", description = "the shared directory holding data/ (default ${DEFAULT-VALUE})") Path shared = Path.of("../shared");
    @Option(names = "--steps") int steps = 150;
    @Option(names = "--batch") int batchSize = 8;
    @Option(names = "--max-len") int maxLen = 256;
    @Option(names = "--eval") int evalRecords = 64;
    @Option(names = "--lr") float lr = 2e-3f;
    @Option(names = "--lora-rank") int rank = 8;
    @Option(names = "--backend", description = "cpu or gpu (default ${DEFAULT-VALUE})") String backend = "cpu";
    @Option(names = "--curves", description = "write every step's training loss per variant to this JSONL file, and its plot next to it (FILE.svg)") Path curves;
    @Option(names = "--threads") int threads = Runtime.getRuntime().availableProcessors();
    @Option(names = "--seed") long seed = 17;
    @Option(names = "--mlp", description = "MLP ratio of layers 1-3 (default ${DEFAULT-VALUE})") double mlpRatio = 0.75;
    @Option(names = "--attn", description = "attention ratio of layers 2-3 (default ${DEFAULT-VALUE})") double attnRatio = 0.5;

    public static void main(String[] args) {
        System.exit(new CommandLine(new SparseParity()).execute(args));
    }

    /** stories260K has 5 layers: first and last dense, the MLP ratio in the middle, the attention ratio in the deeper middle. */
    String config(String frozenGrad) {
        return """
                start_step: 0.05
                mode: svd_8
                skip_output_tokens: true
                frozen_grad: %s
                sparsity:
                  layers.1.mlp: %s
                  layers.2.mlp: %s
                  layers.3.mlp: %s
                  layers.2.self_attn: %s
                  layers.3.self_attn: %s
                """.formatted(frozenGrad, mlpRatio, mlpRatio, mlpRatio, attnRatio, attnRatio);
    }

    record Row(String name, double evalLoss, double tokenAcc, double trainLoss, double ms, double flopReduction) {}

    @Override
    public Integer call() throws Exception {
        Path data = shared.resolve("data");
        Llama2cTokenizer tok = Llama2cTokenizer.load(data.resolve("tokenizers/llama2c-tok512/tok512.bin"));
        var ds = DatasetReader.read(data.resolve("gsm8k/train_llm_adapters_format.json"), DatasetFormat.ALPACA, DatasetReader.Options.DEFAULT);
        List<TokenizedExample> all = ExampleTokenizer.tokenizeAll(tok, ds.examples());
        List<TokenizedExample> eval = all.subList(0, evalRecords), train = all.subList(evalRecords, all.size());
        Backend be = switch (backend) {
            case "cpu" -> new CpuBackend(threads);
            case "gpu" -> (Backend) Class.forName("org.sparselora.cuda.GpuBackend").getMethod("create", int.class).invoke(null, 0);
            default -> throw new IllegalArgumentException("--backend must be cpu or gpu, got " + backend);
        };
        if (curves != null) java.nio.file.Files.deleteIfExists(curves);
        List<Row> rows = new ArrayList<>();
        try (Llama2cCheckpoint ckpt = Llama2cCheckpoint.open(data.resolve("models/stories260K/stories260K.bin"))) {
            LlamaConfig c = ckpt.config();
            System.out.printf(Locale.ROOT, "stories260K (C=%d, I=%d, %d layers, %d/%d heads); GSM8K LLM-Adapters: %d train / %d eval records; %d steps of %d, max len %d, LoRA r=%d all linears, lr %g%n",
                    c.hiddenSize(), c.intermediateSize(), c.numLayers(), c.numHeads(), c.numKvHeads(), train.size(), eval.size(),
                    steps, batchSize, maxLen, rank, lr);
            LlamaModel model = new LlamaModel(be, LlamaWeights.upload(be, ckpt));
            model.setRowBlockMode(RowBlockMode.fromProperty());   // -Dsparselora.rowBlocks
            rows.add(run("dense LoRA", null, model, be, ckpt, tok, train, eval));
            rows.add(run("SparseLoRA sliced", SparsityConfig.parse(config("sliced"), "parity-sliced"), model, be, ckpt, tok, train, eval));
            rows.add(run("SparseLoRA cut", SparsityConfig.parse(config("cut"), "parity-cut"), model, be, ckpt, tok, train, eval));
        }
        System.out.println();
        System.out.print(config("sliced"));
        System.out.println("| variant | eval loss | Δ vs dense | response token acc | Δ (points) | last-10 train loss | ms/step | FLOP reduction (sparse steps) |");
        System.out.println("|---|---|---|---|---|---|---|---|");
        Row d = rows.get(0);
        for (Row r : rows)
            System.out.printf(Locale.ROOT, "| %s | %.4f | %+.2f%% | %.2f%% | %+.2f | %.4f | %.1f | %.2fx |%n", r.name, r.evalLoss,
                    100 * (r.evalLoss / d.evalLoss - 1), 100 * r.tokenAcc, 100 * (r.tokenAcc - d.tokenAcc), r.trainLoss, r.ms, r.flopReduction);
        be.close();
        if (curves != null)
            System.out.println("loss curves plotted to " + CurvesPlot.write(curves, CurvesPlot.svgFor(curves),
                    String.format(Locale.ROOT, "stories260K on GSM8K, %d steps on %s: dense LoRA vs SparseLoRA", steps, backend), 10));
        return 0;
    }

    private void appendCurve(String variant, int step, StepResult r) {
        try {
            java.nio.file.Files.writeString(curves, String.format(Locale.ROOT, "{\"variant\":\"%s\",\"step\":%d,\"loss\":%.6f,\"sparse\":%b,\"ms\":%.3f}%n",
                    variant, step, r.meanLoss(), r.sparse(), r.millis()), java.nio.file.StandardOpenOption.CREATE, java.nio.file.StandardOpenOption.APPEND);
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException("cannot append to " + curves, e);
        }
    }

    private Row run(String name, SparsityConfig sc, LlamaModel model, Backend be, Llama2cCheckpoint ckpt, Llama2cTokenizer tok,
                    List<TokenizedExample> train, List<TokenizedExample> eval) {
        LoraConfig lc = new LoraConfig(rank, 2f * rank, 0f, java.util.EnumSet.allOf(Projection.class), false, seed);
        LoraAdapter lora = new LoraAdapter(be, model.config(), lc);
        OptimizerConfig opt = new OptimizerConfig(lr, 0.9f, 0.999f, 1e-8f, 0f, 1f, OptimizerConfig.Schedule.LINEAR, steps / 10, steps);
        LoraTrainer t = new LoraTrainer(model, lora, opt);
        SparsePlanner planner = sc == null ? null : SparsePlanner.create(be, ckpt, sc, null, steps, seed, SvdPredictor.Progress.NONE);
        if (planner != null) t.setSparsePlanner(planner);
        Batcher batches = new Batcher(train, new Batcher.Options(batchSize, maxLen, seed, true, true, false), tok);
        double msSum = 0, lastLoss = 0;
        long flops = 0, dense = 0;
        int timed = 0;
        for (int s = 0; s < steps; s++) {
            Batch b = batches.next();
            boolean sparse = planner != null && planner.schedule().sparseAt(s);
            StepResult r = t.computeGradients(b, s, sparse);
            t.applyUpdate(s, r.outputTokens());
            if (s >= steps - 10) lastLoss += r.meanLoss() / 10;
            if (curves != null) appendCurve(name, s, r);
            if (s >= steps / 10) { msSum += r.millis(); timed++; }
            if (r.sparse() || planner == null) { flops += r.flops(); dense += r.denseFlops(); }
        }
        if (planner != null) planner.close();
        // dense evaluation of the trained adapter on the held-out records
        Batcher ev = new Batcher(eval, new Batcher.Options(batchSize, maxLen, 0, false, false, false), tok);
        double lossSum = 0;
        long tokens = 0, correct = 0;
        int v = model.config().vocabSize();
        for (int i = 0; i < ev.batchesPerEpoch(); i++) {
            Batch b = ev.next();
            var out = model.evaluate(b, lora, null, true);
            lossSum += out.lossSum();
            tokens += out.outputTokens();
            for (int n = 0; n < b.tokenCount(); n++) {
                if (b.targets()[n] == Batch.IGNORE) continue;
                int best = 0;
                for (int j = 1; j < v; j++) if (out.logits()[n * v + j] > out.logits()[n * v + best]) best = j;
                if (best == b.targets()[n]) correct++;
            }
        }
        t.close();
        lora.close();
        Row row = new Row(name, lossSum / tokens, (double) correct / tokens, lastLoss, msSum / Math.max(1, timed), dense == 0 ? 1 : (double) dense / flops);
        System.out.printf(Locale.ROOT, "%s: eval loss %.4f, token acc %.4f, train loss (last 10) %.4f%n", name, row.evalLoss, row.tokenAcc, row.trainLoss);
        return row;
    }
}
