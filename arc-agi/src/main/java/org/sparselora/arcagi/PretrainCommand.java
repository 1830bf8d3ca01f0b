package org.sparselora.arcagi;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.sparselora.actors.pipeline.LossPlot;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.io.AtomicFiles;
import org.sparselora.engine.io.HfConfig;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.RandomWeights;
import org.sparselora.engine.model.Batch;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code sparselora arc pretrain}: a Llama-architecture base model trained from scratch on the ARC
 * training tasks (the validation split held out), saved as a HF model directory with the ARC
 * tokenizer — what {@code arc solve --model} takes.
 */
@Command(name = "pretrain", mixinStandardHelpOptions = true,
        description = {"Pretrain an ARC base model from random weights on the ARC-AGI-1 and -2 training tasks (the fixed",
                "validation split is never trained on), for a number of steps or minutes; writes a HF model directory",
                "(config.json, model.safetensors, ARC tokenizer.json), metrics.jsonl, loss.svg, split.json and pretrain.json."})
public final class PretrainCommand implements Callable<Integer> {

    @Option(names = "--arc1", required = true, description = "ARC-AGI-1 training task directory") Path arc1;
    @Option(names = "--arc2", description = "ARC-AGI-2 training task directory") Path arc2;
    @Option(names = "--out", required = true, description = "output model directory (must not hold a model yet)") Path out;
    @Option(names = "--preset", defaultValue = "small", description = {"model shape: tiny, small or base (ARC shapes), or the engine's pretraining presets",
            "tiny-1m, small-8m, base-30m (default: ${DEFAULT-VALUE})"}) String preset;
    @Option(names = "--config", description = "a HF config.json whose shape replaces the preset's (vocabulary and special ids are ARC's)") Path config;
    @Option(names = "--steps", defaultValue = "2000", description = "optimizer steps the schedule is planned for (default: ${DEFAULT-VALUE})") int steps;
    @Option(names = "--minutes", defaultValue = "0", description = "stop after this much training time, saving what is trained (0 = no limit)") double minutes;
    @Option(names = "--seq-len", defaultValue = "2048", description = "tokens per packed row, capped at the model's positions (default: ${DEFAULT-VALUE})") int seqLen;
    @Option(names = "--batch-size", defaultValue = "8", description = "rows per step (default: ${DEFAULT-VALUE})") int batchSize;
    @Option(names = "--lr", defaultValue = "1e-3", description = "peak learning rate (default: ${DEFAULT-VALUE})") double lr;
    @Option(names = "--warmup", defaultValue = "100", description = "warm-up steps (default: ${DEFAULT-VALUE})") int warmup;
    @Option(names = "--permute-background", description = "let colour permutations move colour 0 too (default: 0 stays)") boolean permuteBackground;
    @Option(names = "--log-every", defaultValue = "10", description = "progress line every this many steps (default: ${DEFAULT-VALUE})") int logEvery;
    @Option(names = "--device", defaultValue = "cpu", paramLabel = "cpu|cuda[:N]", description = "backend (default: ${DEFAULT-VALUE})") String device;
    @Option(names = "--seed", defaultValue = "0") long seed;

    /**
     * The preset shapes (vocabulary: the ARC tokenizer's): ARC's own (untied head, grouped KV heads),
     * or the engine's pretraining presets with their positions raised to 8192, the length of the
     * longest ARC tasks (RoPE has no learned positions, so the limit is only the tables' size).
     */
    static LlamaConfig preset(String name) {
        LlamaConfig engine = RandomWeights.preset(name, ArcTokenizer.VOCAB, ArcTokenizer.BOS, ArcTokenizer.EOS);
        if (engine != null) return withPositions(engine, 8192);
        return switch (name) {
            case "tiny" -> arc(64, 176, 2, 4, 2, 16, 2048);
            case "small" -> arc(256, 704, 6, 8, 4, 32, 8192);
            case "base" -> arc(512, 1408, 10, 8, 4, 64, 8192);
            default -> throw new IllegalArgumentException("--preset '" + name + "': expected tiny, small, base, " + RandomWeights.PRESET_NAMES);
        };
    }

    static LlamaConfig withPositions(LlamaConfig c, int positions) {
        return new LlamaConfig(c.architecture(), c.hiddenSize(), c.intermediateSize(), c.numLayers(), c.numHeads(), c.numKvHeads(), c.headDim(),
                c.vocabSize(), positions, c.rmsNormEps(), c.ropeTheta(), c.ropeScaling(), c.tieWordEmbeddings(), c.attentionBias(), c.bosTokenId(), c.eosTokenId(), c.slidingWindow());
    }

    static LlamaConfig arc(int hidden, int inter, int layers, int heads, int kv, int headDim, int positions) {
        return new LlamaConfig("LlamaForCausalLM", hidden, inter, layers, heads, kv, headDim, ArcTokenizer.VOCAB, positions, 1e-5f, 10000f,
                null, false, false, ArcTokenizer.BOS, ArcTokenizer.EOS);
    }

    /** A HF config's shape with the ARC vocabulary and special ids. */
    static LlamaConfig fromHf(Path file) {
        LlamaConfig c = HfConfig.read(file);
        return new LlamaConfig("LlamaForCausalLM", c.hiddenSize(), c.intermediateSize(), c.numLayers(), c.numHeads(), c.numKvHeads(),
                c.headDim(), ArcTokenizer.VOCAB, c.maxPositions(), c.rmsNormEps(), c.ropeTheta(), c.ropeScaling(), c.tieWordEmbeddings(),
                false, ArcTokenizer.BOS, ArcTokenizer.EOS);
    }

    @Override
    public Integer call() throws Exception {
        if (steps < 1) throw new IllegalArgumentException("--steps must be >= 1, got " + steps);
        if (minutes < 0) throw new IllegalArgumentException("--minutes must be >= 0, got " + minutes);
        if (batchSize < 1) throw new IllegalArgumentException("--batch-size must be >= 1, got " + batchSize);
        if (logEvery < 1) throw new IllegalArgumentException("--log-every must be >= 1, got " + logEvery);
        if (Files.exists(out.resolve("config.json")) || Files.exists(out.resolve("model.safetensors")))
            throw new IllegalArgumentException("--out " + out + " already holds a model: choose a fresh directory");
        LlamaConfig cfg = config != null ? fromHf(config) : preset(preset);
        int len = Math.min(seqLen, cfg.maxPositions());

        ArcSplit split = ArcSplit.of(arc1, arc2);
        List<ArcTask> tasks = new ArrayList<>();
        for (Path f : split.train()) tasks.add(ArcTask.load(f));
        Files.createDirectories(out);
        writeSplit(split);
        PretrainStream stream = new PretrainStream(tasks, len, seed, !permuteBackground);

        Path metrics = out.resolve("metrics.jsonl");
        Files.deleteIfExists(metrics);
        long t0 = System.nanoTime(), tokens = 0;   // reset when training starts (model set-up is not in the budget)
        double budget = minutes > 0 ? minutes * 60e9 : Double.POSITIVE_INFINITY;
        int done = 0;
        double loss = Double.NaN;
        String trainerName;
        System.err.printf(Locale.ROOT, "arc pretrain: %d training tasks (%d held out), model %dx%d, %d layers, rows of %d tokens%n",
                tasks.size(), split.validation().size(), cfg.hiddenSize(), cfg.intermediateSize(), cfg.numLayers(), len);
        try (Backend be = ArcModel.backend(device);
             LlamaWeights w = LlamaWeights.upload(be, new RandomWeights(cfg, seed, RandomWeights.Scheme.PRETRAIN));
             LlamaModel model = new LlamaModel(be, w, len);
             BaseTrainer trainer = BaseTrainer.create(model, new BaseTrainer.PretrainSettings(lr, warmup, steps, seed));
             BufferedWriter log = Files.newBufferedWriter(metrics, StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND)) {
            trainerName = trainer.describe();
            System.err.println("arc pretrain: trainer " + trainerName);
            ObjectMapper json = new ObjectMapper();
            t0 = System.nanoTime();
            // at least one step, so even a tiny budget saves a trained model
            while (done < steps && (done == 0 || System.nanoTime() - t0 < budget)) {
                long s0 = System.nanoTime();
                Batch b = stream.nextBatch(batchSize);
                loss = trainer.step(b, done);
                int real = 0;
                for (int k : b.keyStart()) real += b.seqLen() - k;
                tokens += real;
                done++;
                ObjectNode row = json.createObjectNode().put("step", done).put("loss", loss).put("lr", trainer.lr(done - 1))
                        .put("tokens", real).put("loss_tokens", b.outputTokenCount()).put("ms", (System.nanoTime() - s0) / 1e6).put("epoch", stream.epoch());
                log.write(json.writeValueAsString(row));
                log.newLine();
                log.flush();
                if (done % logEvery == 0 || done == steps) {
                    double sec = (System.nanoTime() - t0) / 1e9;
                    System.err.printf(Locale.ROOT, "arc pretrain: step %d/%d loss %.4f lr %.2e %.0f tok/s %.0f s epoch %d%n",
                            done, steps, loss, trainer.lr(done - 1), tokens / sec, sec, stream.epoch());
                }
            }
            // the checkpoint writer replaces a whole directory: write it aside, then move its files in,
            // config.json last (a directory without it is not a model, so an interrupted save is never taken for one)
            Path staged = out.resolve(".weights-tmp");
            trainer.save(staged);
            ArcTokenizer.writeFiles(staged, len);
            try (var files = Files.list(staged)) {
                for (Path f : files.sorted(java.util.Comparator.comparing((Path x) -> x.getFileName().toString().equals("config.json"))).toList())
                    Files.move(f, out.resolve(f.getFileName()), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            }
            Files.delete(staged);
        }
        LossPlot.write(out, "arc pretrain");
        writeSummary(cfg, done, loss, tokens, (System.nanoTime() - t0) / 1e9, stream, trainerName, tasks.size(), split.validation().size());
        System.out.printf(Locale.ROOT, "arc pretrain: %d steps, final loss %.4f, %d examples (%d longer than %d tokens skipped); model in %s%n",
                done, loss, stream.examples(), stream.skipped(), len, out);
        return 0;
    }

    private void writeSplit(ArcSplit split) {
        ObjectMapper m = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode n = m.createObjectNode();
        n.put("rule", "validation = the " + ArcSplit.VALIDATION_COUNT + " ARC-AGI-1 training task ids that sort first, and their ARC-AGI-2 copies");
        n.set("validation", m.valueToTree(ArcSplit.ids(split.validation())));
        n.set("train", m.valueToTree(ArcSplit.ids(split.train())));
        AtomicFiles.writeFile(out.resolve("split.json"), tmp -> m.writeValue(tmp.toFile(), n));
    }

    private void writeSummary(LlamaConfig cfg, int done, double loss, long tokens, double seconds, PretrainStream stream, String trainer,
                              int trainTasks, int heldOut) {
        ObjectMapper m = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode n = m.createObjectNode();
        n.put("trainer", trainer);
        n.put("steps", done);
        if (Double.isFinite(loss)) n.put("final_loss", loss);
        else n.putNull("final_loss");
        n.put("tokens", tokens);
        n.put("seconds", seconds);
        n.put("examples", stream.examples());
        n.put("examples_too_long_skipped", stream.skipped());
        n.put("epochs", stream.epoch());
        n.put("train_tasks", trainTasks);
        n.put("validation_tasks", heldOut);
        n.put("seed", seed);
        n.put("device", device);
        n.put("parameters", parameters(cfg));
        AtomicFiles.writeFile(out.resolve("pretrain.json"), tmp -> m.writeValue(tmp.toFile(), n));
    }

    static long parameters(LlamaConfig c) {
        long h = c.hiddenSize(), per = h * c.qDim() * 2L + h * c.kvDim() * 2L + 3L * h * c.intermediateSize() + 2 * h;
        return c.numLayers() * per + c.vocabSize() * h * (c.tieWordEmbeddings() ? 1 : 2) + h;
    }
}
