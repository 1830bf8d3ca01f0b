package org.sparselora.actors.demo;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.EnumSet;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Set;
import java.util.function.Consumer;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.data.Batcher;
import org.sparselora.engine.data.Example;
import org.sparselora.engine.data.ExampleTokenizer;
import org.sparselora.engine.data.TokenizedExample;
import org.sparselora.engine.io.AtomicFiles;
import org.sparselora.engine.io.HfCheckpoint;
import org.sparselora.engine.io.HfCheckpointWriter;
import org.sparselora.engine.io.HostTensor;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.model.RandomWeights;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.LoraTrainer;
import org.sparselora.engine.train.OptimizerConfig;

/**
 * The demo's base model: a small Llama (GQA) that is <em>built</em> here, not downloaded. Starting
 * from seeded random weights it is trained on the generated COPY task the ReLoRA way — LoRA on all
 * seven projections, merged into the frozen weights every cycle, then a fresh adapter — since the
 * engine trains adapters only. The result is saved as a HF checkpoint (config.json +
 * model.safetensors, plus a HF {@code tokenizer.json} for the character vocabulary from
 * {@link DemoTokenizerFiles}, so the normal job path loads it like any model directory) under a
 * cache directory keyed by a hash of the recipe, and reused.
 */
public final class DemoModel {
    /**
     * How the base model is built: ReLoRA cycles × steps per cycle. {@link #DEFAULT} is the demo's;
     * tests use a tiny one (the cache key includes both, so they never share a directory).
     */
    public record Recipe(int cycles, int stepsPerCycle) {
        public static final Recipe DEFAULT = new Recipe(3, 40);

        public Recipe {
            if (cycles < 1 || stepsPerCycle < 1)
                throw new IllegalArgumentException("base recipe needs ≥ 1 cycle of ≥ 1 step, got " + cycles + "×" + stepsPerCycle);
        }

        /** Bump the version when the recipe's code changes, so an old cache is not used. */
        String key() {
            LlamaConfig c = config();
            return "demo-base-v2:h" + c.hiddenSize() + "-i" + c.intermediateSize() + "-l" + c.numLayers() + "-h" + c.numHeads() + "-kv" + c.numKvHeads()
                    + ":relora-" + cycles + "x" + stepsPerCycle + "x" + BASE_BATCH + ":copy-" + DemoTask.WORD + "-" + DemoTask.ANSWER;
        }
    }

    /** BOS, the word, '>', the answer, EOS: every record has exactly this length (no padding). */
    public static final int SEQ_LEN = 1 + DemoTask.WORD + 1 + DemoTask.ANSWER + 1;

    /** Sequences per base-building step. */
    static final int BASE_BATCH = 16;

    /** Tokens per record without loss (BOS, the word, '>'): the ones SparseLoRA runs sparse. */
    public static final int CONTEXT_TOKENS = 1 + DemoTask.WORD + 1;

    static final int HIDDEN = 128, INTERMEDIATE = 1024, LAYERS = 8;

    private DemoModel() {}

    public static LlamaConfig config() {
        // 8 layers so that 6 (all but the first and last) run sparse, and an MLP 8x the hidden size:
        // the MLP is what SparseLoRA prunes (docs/METHOD.md#mlp-channels), so the wider it is against
        // the parts that stay dense (attention, LoRA, the first and last layers), the more a sparse step saves
        return new LlamaConfig("LlamaForCausalLM", HIDDEN, INTERMEDIATE, LAYERS, 4, 2, HIDDEN / 4, new CharTokenizer().vocabSize(), 64,
                1e-5f, 10000f, null, false, false, CharTokenizer.BOS, CharTokenizer.EOS);
    }

    public static String recipeHash(Recipe recipe) {
        try {
            byte[] d = java.security.MessageDigest.getInstance("SHA-256").digest(recipe.key().getBytes(java.nio.charset.StandardCharsets.UTF_8));
            return HexFormat.of().formatHex(d, 0, 6);
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** The cached base checkpoint directory ({@link Recipe#DEFAULT}), built first when absent. */
    public static Path baseCheckpoint(Path cacheRoot, Backend be, Consumer<String> log) {
        return baseCheckpoint(cacheRoot, Recipe.DEFAULT, be, log);
    }

    /**
     * The cached base checkpoint directory for {@code recipe}, built first when absent. The
     * tokenizer files are (re)written when missing or stale: they are derived from
     * {@link CharTokenizer}, cheap, and a checkpoint cached before they existed stays usable.
     */
    public static Path baseCheckpoint(Path cacheRoot, Recipe recipe, Backend be, Consumer<String> log) {
        Path dir = cacheRoot.resolve("demo-base-" + recipeHash(recipe));
        if (Files.isRegularFile(dir.resolve(HfCheckpoint.SINGLE)) && Files.isRegularFile(dir.resolve("config.json"))) {
            DemoTokenizerFiles.ensure(dir);
            log.accept("base model: cached at " + dir);
            return dir;
        }
        long t0 = System.nanoTime();
        LlamaConfig cfg = config();
        try (LlamaWeights w = LlamaWeights.upload(be, new RandomWeights(cfg, 1234))) {
            LlamaModel model = new LlamaModel(be, w);
            CharTokenizer tok = new CharTokenizer();
            List<TokenizedExample> data = ExampleTokenizer.tokenizeAll(tok, DemoTask.examples(DemoTask.Kind.COPY, 4096, 11, false));
            Batcher batcher = new Batcher(data, new Batcher.Options(BASE_BATCH, SEQ_LEN, 5, true, true, true), tok);
            int cycles = recipe.cycles(), stepsPerCycle = recipe.stepsPerCycle();
            for (int cycle = 0; cycle < cycles; cycle++) {
                LoraConfig lc = new LoraConfig(32, 32f, 0f, EnumSet.allOf(Projection.class), false, 100 + cycle);
                try (LoraAdapter lora = new LoraAdapter(be, cfg, lc)) {
                    LoraTrainer tr = new LoraTrainer(model, lora,
                            new OptimizerConfig(3e-3f, 0.9f, 0.99f, 1e-8f, 0f, 1f, OptimizerConfig.Schedule.COSINE, Math.min(10, stepsPerCycle / 4), stepsPerCycle));
                    double loss = 0;
                    for (int s = 0; s < stepsPerCycle; s++) {
                        Batch b = batcher.next();
                        var r = tr.computeGradients(b, s, false);
                        tr.applyUpdate(s, r.outputTokens());
                        loss = r.meanLoss();
                    }
                    merge(be, w, lora);
                    log.accept(String.format("base model: ReLoRA cycle %d/%d, copy-task loss %.4f", cycle + 1, cycles, loss));
                }
            }
            save(be, w, dir);
        }
        DemoTokenizerFiles.ensure(dir);
        log.accept(String.format("base model: built in %.1f s, saved to %s", (System.nanoTime() - t0) / 1e9, dir));
        return dir;
    }

    /** W += s·B·A for every adapted projection (in the backend's precision). */
    static void merge(Backend be, LlamaWeights w, LoraAdapter lora) {
        for (int l = 0; l < w.layers.length; l++)
            for (Projection p : lora.config().orderedTargets()) {
                LoraAdapter.Lora a = lora.get(l, p);
                be.matmul(w.layers[l].weight(p), a.b(), false, a.a(), false, lora.scaling(), 1f);
            }
    }

    private static void save(Backend be, LlamaWeights w, Path dir) {
        LlamaConfig cfg = w.config;
        LinkedHashMap<String, Tensor> byName = new LinkedHashMap<>();
        byName.put("model.embed_tokens.weight", w.embed);
        for (int l = 0; l < cfg.numLayers(); l++) {
            LlamaWeights.Layer lw = w.layers[l];
            byName.put("model.layers." + l + ".input_layernorm.weight", lw.attnNorm());
            byName.put("model.layers." + l + ".post_attention_layernorm.weight", lw.ffnNorm());
            for (Projection p : Projection.values()) byName.put("model." + p.path(l) + ".weight", lw.weight(p));
        }
        byName.put("model.norm.weight", w.finalNorm);
        if (!cfg.tieWordEmbeddings()) byName.put("lm_head.weight", w.head);
        WeightSource src = new WeightSource() {
            @Override public LlamaConfig config() { return cfg; }
            @Override public Set<String> names() { return byName.keySet(); }
            @Override public HostTensor get(String name) {
                Tensor t = byName.get(name);
                if (t == null) throw new IllegalArgumentException("demo base: no tensor " + name);
                return new HostTensor(name, DType.F32, t.shape(), MemorySegment.ofArray(be.toFloats(t)));
            }
        };
        try {
            Files.createDirectories(dir.getParent());
        } catch (IOException e) {
            throw new IllegalStateException("cannot create " + dir.getParent() + ": " + e.getMessage(), e);
        }
        HfCheckpointWriter.write(src, null, dir, DType.F32, 0, null);
    }

    /**
     * Both task figures in one batched, teacher-forced pass over {@code examples}: the eval loss (mean
     * loss per answer token, EOS included) and the exact match — the fraction of examples whose every
     * answer token and closing EOS is the model's top choice given the correct tokens before it. That
     * is exactly "greedy decoding reproduces the answer and stops": greedy decoding feeds back its own
     * choices, which are the correct tokens for as long as they are right, so the two agree example by
     * example (DemoLearningTest checks it against a token-by-token greedy decoder). One pass of the
     * batched forward instead of a decoder step per token keeps the demo's evaluations to seconds.
     */
    public static DemoEval.Score score(LlamaModel model, LoraAdapter lora, List<Example> examples) {
        CharTokenizer tok = new CharTokenizer();
        List<TokenizedExample> data = ExampleTokenizer.tokenizeAll(tok, examples);
        Batcher b = new Batcher(data, new Batcher.Options(64, SEQ_LEN, 0, false, false, true), tok);
        int vocab = model.config().vocabSize(), correct = 0;
        double lossSum = 0;
        long tokens = 0;
        for (int i = 0; i < b.batchesPerEpoch(); i++) {
            Batch batch = b.next();
            LlamaModel.Output o = model.evaluate(batch, lora, null, true);
            lossSum += o.lossSum();
            tokens += o.outputTokens();
            for (int row = 0; row < batch.batch(); row++) {
                boolean all = true, any = false;
                for (int t = row * batch.seqLen(); t < (row + 1) * batch.seqLen() && all; t++) {
                    int target = batch.targets()[t];
                    if (target == Batch.IGNORE) continue;
                    any = true;
                    all = argmax(o.logits(), t * vocab, vocab) == target;
                }
                if (any && all) correct++;
            }
        }
        return new DemoEval.Score(examples.isEmpty() ? 0 : (double) correct / examples.size(), tokens == 0 ? 0 : lossSum / tokens, examples.size());
    }

    /** Index of the largest of v[from, from + n) (the first on ties, as greedy decoding picks). */
    static int argmax(float[] v, int from, int n) {
        int best = 0;
        for (int i = 1; i < n; i++) if (v[from + i] > v[from + best]) best = i;
        return best;
    }
}
