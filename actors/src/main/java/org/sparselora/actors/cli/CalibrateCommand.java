package org.sparselora.actors.cli;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.sparselora.actors.engine.LlamaEngineProvider;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.data.Batcher;
import org.sparselora.engine.data.DatasetFormat;
import org.sparselora.engine.data.DatasetReader;
import org.sparselora.engine.data.ExampleTokenizer;
import org.sparselora.engine.data.PromptTemplate;
import org.sparselora.engine.io.FormatException;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.sparse.Calibration;
import org.sparselora.engine.sparse.FlopCount;
import org.sparselora.engine.sparse.SparsityConfig;
import org.sparselora.engine.sparse.SvdPredictor;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.model.Batch;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code sparselora calibrate}: picks per-layer sparsity ratios for a base model that meet a FLOP
 * reduction target with the least predicted loss increase ({@link Calibration}: each layer part's
 * loss sensitivity measured on a few batches of the data, then an exact knapsack over the
 * candidate ratios), writes the config as SparsityConfig YAML (temp file + rename) and prints the
 * sensitivity table with the predicted and the measured loss of the chosen config. FLOPs are
 * priced for LoRA training steps on the calibration batches' shapes ({@code --lora-r},
 * {@code --lora-targets}); the SVD predictor comes from (and goes to) the training pipeline's cache.
 */
@Command(name = "calibrate", mixinStandardHelpOptions = true,
        description = {"Choose per-layer sparsity ratios that meet a FLOP-reduction target with the least loss increase,",
                "measured on a few batches; writes a sparsity config YAML and reports predicted vs measured loss."})
public final class CalibrateCommand implements Callable<Integer> {

    @Mixin
    ModelOptions models;

    @Option(names = "--data", required = true, paramLabel = "D", description = "dataset: Alpaca/Math10K JSON(L), GSM8K JSONL or text JSONL")
    Path data;

    @Option(names = "--format", paramLabel = "alpaca|gsm8k|text", description = "dataset format (default: detected from the first record)")
    String format;

    @Option(names = "--field", defaultValue = "text", description = "text field of a text dataset (default: ${DEFAULT-VALUE})")
    String field;

    @Option(names = "--target-flops", required = true, paramLabel = "F", description = "FLOP reduction: dense FLOPs / sparse FLOPs (2.0 = half the FLOPs)")
    double targetFlops;

    @Option(names = "--out", required = true, paramLabel = "config.yaml", description = "where to write the sparsity config")
    Path out;

    @Option(names = "--batches", defaultValue = "4", description = "calibration batches (default: ${DEFAULT-VALUE})")
    int batches;

    @Option(names = "--batch-size", defaultValue = "4", description = "records per batch (default: ${DEFAULT-VALUE})")
    int batchSize;

    @Option(names = "--max-tokens", defaultValue = "256", description = "sequence length of a batch (default: ${DEFAULT-VALUE})")
    int maxTokens;

    @Option(names = "--rank", defaultValue = "8", description = "SVD predictor rank of the config (default: ${DEFAULT-VALUE})")
    int rank;

    @Option(names = "--lora-r", defaultValue = "8", description = "LoRA rank the FLOPs are priced with (default: ${DEFAULT-VALUE})")
    int loraR;

    @Option(names = "--lora-targets", defaultValue = "q,k,v,o", split = ",", description = "LoRA targets priced (default: ${DEFAULT-VALUE})")
    List<String> loraTargets;

    @Option(names = "--mlp-ratios", split = ",", description = "candidate MLP ratios (default: 0.5,0.75,0.9,0.95,0.99)")
    double[] mlpRatios;

    @Option(names = "--attention-ratios", split = ",", description = "candidate attention ratios (default: 0.25,0.5,0.75)")
    double[] attentionRatios;

    @Option(names = "--all-layers", description = "let the first and last layers be sparse too (the published configs keep them dense)")
    boolean allLayers;

    @Option(names = "--skip-output-tokens", negatable = true, defaultValue = "true", fallbackValue = "true",
            description = "output tokens (those with a label) stay dense, as in training (default: ${DEFAULT-VALUE}); --no-skip-output-tokens makes every token sparse")
    boolean skipOutputTokens;

    @Option(names = "--seed", defaultValue = "0", description = "shuffle seed of the calibration batches (default: ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--predictor-cache", paramLabel = "FILE", description = "SVD factor cache (default: the training pipeline's for this model and rank)")
    Path predictorCache;

    @Mixin
    DeviceOption device;

    @Override
    public Integer call() throws IOException {
        if (!(targetFlops >= 1)) throw new IllegalArgumentException("--target-flops must be >= 1 (dense FLOPs / sparse FLOPs), got " + targetFlops);
        if (batches <= 0) throw new IllegalArgumentException("--batches must be positive, got " + batches);
        if (rank <= 0) throw new IllegalArgumentException("--rank must be positive, got " + rank);
        Path outDir = out.toAbsolutePath().getParent();
        if (!Files.isDirectory(outDir)) throw new FormatException(out, "its directory " + outDir + " does not exist");
        FlopCount.Lora lora = new FlopCount.Lora(loraR, linears(loraTargets));
        double[] mlp = mlpRatios != null ? mlpRatios : Calibration.DEFAULT_MLP_RATIOS;
        double[] attn = attentionRatios != null ? attentionRatios : Calibration.DEFAULT_ATTENTION_RATIOS;
        checkRatios("--mlp-ratios", mlp);
        checkRatios("--attention-ratios", attn);

        try (ModelOptions.Opened m = models.open()) {
            WeightSource src = m.src();
            Tokenizer tok = m.tok();
            DatasetReader.Dataset ds = DatasetReader.read(data, format == null ? null : DatasetFormat.parse(format),
                    new DatasetReader.Options(PromptTemplate.LLM_ADAPTERS, field));
            if (!ds.malformed().isEmpty()) System.err.println(ds.report());
            if (ds.examples().isEmpty()) throw new FormatException(data, "no usable records");
            Batcher batcher = new Batcher(ExampleTokenizer.tokenizeAll(tok, ds.examples()),
                    new Batcher.Options(batchSize, maxTokens, seed, true, false, false), tok);
            List<Batch> calib = new ArrayList<>();
            int n = Math.min(batches, batcher.batchesPerEpoch());
            for (int i = 0; i < n; i++) calib.add(batcher.next());
            if (n < batches)
                System.err.printf(Locale.ROOT, "calibrate: %s has %d records: %d batch%s of %d, not %d%n", data, ds.examples().size(), n,
                        n == 1 ? "" : "es", batchSize, batches);

            long context = 0;
            for (Batch b : calib) {
                long nonPad = 0;
                for (int row = 0; row < b.batch(); row++) nonPad += b.seqLen() - b.keyStart()[row];
                context += nonPad - b.outputTokenCount();
            }
            if (skipOutputTokens && context <= 0)
                System.err.println("calibrate: warning: " + data + " has no prompt (context) tokens, only output tokens, which stay dense:"
                        + " sparsity cannot change the loss here (use an instruction dataset, or --no-skip-output-tokens)");
            SparsityConfig template = SparsityConfig.parse("mode: svd_" + rank + "\nskip_output_tokens: " + skipOutputTokens + "\n",
                    "calibration template");
            Path cache = predictorCache != null ? predictorCache : LlamaEngineProvider.predictorCache(models.model, rank);
            Files.createDirectories(cache.toAbsolutePath().getParent());
            Backend be = device.backend();
            Calibration.Result r;
            try (be) {
                r = Calibration.calibrateModel(be, src, calib, lora, template, targetFlops, mlp, attn, cache, svdProgress(),
                        (done, total, what) -> System.err.printf(Locale.ROOT, "calibrate %d/%d %s%n", done, total, what), !allLayers);
            }
            r.config().write(out);
            System.out.print(r.report());
            System.out.printf(Locale.ROOT, "target %.3fx, reached %.3fx; loss: base %.5f, predicted %.5f, measured %.5f%n",
                    targetFlops, r.flopReduction(), r.baseLoss(), r.predictedLoss(), r.measuredLoss());
            System.out.println("wrote " + out.toAbsolutePath());
            return 0;
        }
    }

    private static SvdPredictor.Progress svdProgress() {
        return new SvdPredictor.Progress() {
            @Override
            public void step(int done, int total, String what) { System.err.printf(Locale.ROOT, "svd %d/%d %s%n", done, total, what); }

            @Override
            public void note(String message) { System.err.println("svd: " + message); }
        };
    }

    static EnumSet<Projection> linears(List<String> names) {
        EnumSet<Projection> s = EnumSet.noneOf(Projection.class);
        for (String n : names) {
            String k = n.trim().toUpperCase(Locale.ROOT).replace("_PROJ", "");
            try {
                s.add(Projection.valueOf(k));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("--lora-targets: unknown projection '" + n + "' (expected q,k,v,o,gate,up,down)");
            }
        }
        if (s.isEmpty()) throw new IllegalArgumentException("--lora-targets: at least one projection is needed");
        return s;
    }

    private static void checkRatios(String option, double[] ratios) {
        for (double r : ratios)
            if (!(r > 0 && r < 1)) throw new IllegalArgumentException(option + ": ratio " + r + " is outside (0, 1)");
    }
}
