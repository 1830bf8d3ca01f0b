package org.sparselora.engine.sparse;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.io.Llama2cCheckpoint;
import org.sparselora.engine.io.SharedData;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.tokenizer.Llama2cTokenizer;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.engine.model.LayerSelector;

/**
 * The predictor on a real pretrained model, {@code stories260K} (llama2.c; 5 layers, C=64, I=172,
 * GQA 8/4 heads), with the real per-layer normed inputs of GSM8K questions: at full rank the
 * selection equals brute force on real activations, and the rank-8 estimate quality is reported.
 */
@Tag("shared-data")
class Stories260kPredictorTest {
    static final CpuBackend be = new CpuBackend(2);

    @AfterAll
    static void close() { be.close(); }

    /** Four GSM8K questions, left-padded to the longest. */
    static Batch questions(Llama2cTokenizer tok) throws IOException {
        List<int[]> seqs = new ArrayList<>();
        ObjectMapper json = new ObjectMapper();
        for (String line : Files.readAllLines(SharedData.file("gsm8k/train.jsonl")).subList(0, 4))
            seqs.add(tok.encode(json.readTree(line).get("question").asText(), true));
        int t = seqs.stream().mapToInt(s -> s.length).max().orElseThrow();
        int b = seqs.size();
        int[] tokens = new int[b * t], targets = new int[b * t], positions = new int[b * t], keyStart = new int[b];
        for (int s = 0; s < b; s++) {
            int[] q = seqs.get(s);
            keyStart[s] = t - q.length;
            for (int i = 0; i < t; i++) {
                int n = s * t + i;
                boolean pad = i < keyStart[s];
                tokens[n] = pad ? 0 : q[i - keyStart[s]];
                positions[n] = pad ? 0 : i - keyStart[s];
                targets[n] = pad || i == t - 1 ? Batch.IGNORE : q[i - keyStart[s] + 1];
            }
        }
        return new Batch(b, t, tokens, targets, positions, keyStart);
    }

    /** Captures each layer's normed inputs during a dense forward (the capturing selector keeps every layer dense). */
    static final class Capture implements LayerSelector {
        final Map<Integer, float[]> attn = new HashMap<>(), mlp = new HashMap<>();
        @Override public SparsePlan.LayerPlan attention(int layer, Tensor x) { attn.put(layer, be.toFloats(x)); return null; }
        @Override public SparsePlan.LayerPlan mlp(int layer, Tensor x) { mlp.put(layer, be.toFloats(x)); return null; }
    }

    @Test
    void predictorOnRealActivations() throws IOException {
        try (Llama2cCheckpoint ckpt = Llama2cCheckpoint.open(SharedData.file("models/stories260K/stories260K.bin"))) {
            LlamaConfig c = ckpt.config();
            Llama2cTokenizer tok = Llama2cTokenizer.load(SharedData.file("tokenizers/llama2c-tok512/tok512.bin"));
            Batch b = questions(tok);
            LlamaModel model = new LlamaModel(be, LlamaWeights.upload(be, ckpt));
            // every token "sparse" with no layer entries: the selector is consulted, the forward stays dense
            SparsePlan probe = new SparsePlan(be.fromInts(java.util.stream.IntStream.range(0, b.tokenCount()).toArray(), b.tokenCount()),
                    null, new SparsePlan.LayerPlan[c.numLayers()], SparsePlan.FrozenGrad.SLICED);
            Capture cap = new Capture();
            double sparseProbeLoss = model.evaluate(b, null, probe, cap, false).lossSum();
            assertEquals(model.evaluate(b, null, null, false).lossSum(), sparseProbeLoss, 0.0, "capturing keeps the forward dense");
            assertEquals(c.numLayers(), cap.attn.size());
            PredictorQuality.LayerInputs inputs = new PredictorQuality.LayerInputs() {
                @Override public float[] attention(int layer) { return cap.attn.get(layer); }
                @Override public float[] mlp(int layer) { return cap.mlp.get(layer); }
            };
            String cfg = "sparsity:\n" + java.util.stream.IntStream.range(0, c.numLayers())
                    .mapToObj(l -> "  layers." + l + ".mlp: 0.75\n  layers." + l + ".self_attn: 0.5\n").reduce("", String::concat);
            SparsityConfig.Resolved sp = SparsityConfig.parse(cfg, "stories").resolve(c);

            // full rank on the MLP (min(C, I) = C): the selection is brute force on real activations
            SparsityConfig.Resolved mlpOnly = SparsityConfig.parse(cfg.replaceAll("(?m)^.*self_attn.*\n", ""), "mlp").resolve(c);
            SvdPredictor full = SvdPredictor.forConfig(ckpt, mlpOnly, c.hiddenSize(), null, LowRankSvd.Method.EXACT, SvdPredictor.Progress.NONE);
            PredictorQuality fq = PredictorQuality.measure(be, full, mlpOnly, ckpt, inputs, b.batch(), b.seqLen(), b.keyStart());
            assertEquals(1.0, fq.mlpRecall(), 0.0, "full rank: " + fq);

            SvdPredictor r8 = SvdPredictor.forConfig(ckpt, sp, 8, null, LowRankSvd.Method.AUTO, SvdPredictor.Progress.NONE);
            PredictorQuality q = PredictorQuality.measure(be, r8, sp, ckpt, inputs, b.batch(), b.seqLen(), b.keyStart());
            System.out.printf("stories260K, %d GSM8K questions (%d tokens), MLP 0.75 / attention 0.5 everywhere: %s%n",
                    b.batch(), b.tokenCount(), q);
            // better than choosing at random (chance recall = kept fraction: 0.25 MLP, 0.5 attention)
            assertTrue(q.mlpRecall() > 0.25 && q.kRecall() > 0.5 && q.vRecall() > 0.5, q.toString());
        }
    }

    @Test
    void calibrationOnStories260k() {
        try (Llama2cCheckpoint ckpt = Llama2cCheckpoint.open(SharedData.file("models/stories260K/stories260K.bin"))) {
            Llama2cTokenizer tok = Llama2cTokenizer.load(SharedData.file("tokenizers/llama2c-tok512/tok512.bin"));
            var ds = org.sparselora.engine.data.DatasetReader.read(SharedData.file("gsm8k/train_llm_adapters_format.json"),
                    org.sparselora.engine.data.DatasetFormat.ALPACA, org.sparselora.engine.data.DatasetReader.Options.DEFAULT);
            var examples = org.sparselora.engine.data.ExampleTokenizer.tokenizeAll(tok, ds.examples().subList(0, 4));
            var batcher = new org.sparselora.engine.data.Batcher(examples,
                    new org.sparselora.engine.data.Batcher.Options(4, 256, 0, false, false, false), tok);
            List<Batch> batches = List.of(batcher.next());
            List<String> progress = new ArrayList<>();
            Calibration.Result r = Calibration.calibrateModel(be, ckpt, batches, FlopCount.Lora.qkvo(8), SparsityConfig.parse("mode: svd_8\n", "t"),
                    1.05, new double[] {0.5, 0.9, 0.99}, new double[] {0.5}, null, SvdPredictor.Progress.NONE,
                    (d, t, w) -> progress.add(d + "/" + t));
            System.out.print("stories260K, 4 GSM8K records, target 1.05x FLOP reduction of a LoRA r=8 q,k,v,o step:\n" + r.report());
            System.out.print(r.config().toYaml());
            assertTrue(r.flopReduction() >= 1.05, r.report());
            assertEquals("13/13", progress.get(progress.size() - 1), "dense + 3 middle layers x (3 MLP + 1 attention ratios)");
            assertTrue(Double.isFinite(r.measuredLoss()) && r.measuredLoss() > 0);
        }
    }
}
