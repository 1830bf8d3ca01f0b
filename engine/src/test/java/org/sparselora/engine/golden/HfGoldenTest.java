package org.sparselora.engine.golden;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.io.GoldenFixtures;
import org.sparselora.engine.io.HostTensor;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.Batch;

/**
 * The engine against HF transformers + PEFT (fixtures exported by scripts/export_hf_golden.py on
 * the GPU machine, fp32 on its CPU): a tiny Llama (GQA, llama3 rope scaling, untied head) and a
 * Qwen2 (q/k/v biases, tied head), a left-padded batch with a prompt prefix.
 *
 * <p>Tolerances: logits 2e-4 absolute (fp32, different summation orders across ~300-wide
 * reductions); loss 1e-5 relative; LoRA gradients 1e-3 relative to the tensor's max |grad| (the
 * backward sums over more terms in a different order).
 */
class HfGoldenTest {

    @ParameterizedTest
    @ValueSource(strings = {"llama", "qwen2"})
    void logitsLossAndLoraGradientsMatchPeft(String family) {
        try (GoldenFixtures g = GoldenFixtures.fromClasspath(family); CpuBackend be = new CpuBackend()) {
            for (WeightSource src : new WeightSource[] {g.model(), g.shardedModel()}) {
                try (LlamaWeights w = LlamaWeights.upload(be, src)) {
                    check(g, be, w, family);
                }
            }
        }
    }

    private static void check(GoldenFixtures g, CpuBackend be, LlamaWeights w, String family) {
        Batch batch = batchOf(g);
        LlamaModel model = new LlamaModel(be, w);
        try (LoraAdapter lora = LoraAdapter.fromPeft(be, w.config, g.adapter(), g.adapterDir())) {

            int V = w.config.vocabSize(), B = batch.batch(), T = batch.seqLen();
            int[][] mask = g.attentionMask();
            LlamaModel.Output base = model.evaluate(batch, null, null, true);
            LlamaModel.Output out = model.evaluate(batch, lora, null, true);
            compareLogits(family + " base", g.logitsBase(), base.logits(), mask, B, T, V);
            compareLogits(family + " peft", g.logits(), out.logits(), mask, B, T, V);
            assertEquals(g.loss(), out.meanLoss(), 1e-5 * g.loss(), family + " loss");
            assertEquals(g.lossBase(), base.meanLoss(), 1e-5 * g.lossBase(), family + " base loss");

            // gradients: ours are sums over output tokens, HF's of the mean loss
            lora.zeroGrads();
            double lossSum = model.forward(batch, lora, null, 0L);
            model.backward();
            int n = batch.outputTokenCount();
            assertEquals(g.loss(), lossSum / n, 1e-5 * g.loss(), family + " training-forward loss");
            Map<String, HostTensor> expected = g.grads();
            LinkedHashMap<String, float[]> ours = new LinkedHashMap<>();
            for (int i = 0; i < lora.names().size(); i++) ours.put(lora.names().get(i), be.toFloats(lora.grads().get(i)));
            assertEquals(expected.size(), ours.size(), "number of LoRA gradient tensors");
            for (var e : expected.entrySet()) {
                float[] want = e.getValue().toFloats();
                float[] got = ours.get(e.getKey());
                assertTrue(got != null, "no gradient for " + e.getKey());
                double max = 0;
                for (float v : want) max = Math.max(max, Math.abs(v));
                assertTrue(max > 0, "fixture gradient " + e.getKey() + " is zero");
                for (int i = 0; i < want.length; i++)
                    assertEquals(want[i], got[i] / n, 1e-3 * max, family + " grad " + e.getKey() + "[" + i + "]");
            }
        }
    }

    /** HF's (input_ids, labels, attention_mask, position_ids) → our shifted Batch. */
    static Batch batchOf(GoldenFixtures g) {
        int[][] ids = g.inputIds(), labels = g.labels(), mask = g.attentionMask(), pos = g.positionIds();
        int B = ids.length, T = ids[0].length;
        int[] tokens = new int[B * T], targets = new int[B * T], positions = new int[B * T], keyStart = new int[B];
        for (int b = 0; b < B; b++) {
            int first = 0;
            while (first < T && mask[b][first] == 0) first++;
            keyStart[b] = first;
            for (int t = 0; t < T; t++) {
                tokens[b * T + t] = ids[b][t];
                targets[b * T + t] = t + 1 < T ? labels[b][t + 1] : Batch.IGNORE;
                positions[b * T + t] = pos[b][t];
            }
        }
        return new Batch(B, T, tokens, targets, positions, keyStart);
    }

    private static void compareLogits(String what, HostTensor want, float[] got, int[][] mask, int B, int T, int V) {
        float[] w = want.toFloats();
        int compared = 0;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                if (mask[b][t] == 0) continue; // HF writes 0 at padding positions
                for (int v = 0; v < V; v++) {
                    int i = (b * T + t) * V + v;
                    assertEquals(w[i], got[i], 2e-4, what + " logits[" + b + "," + t + "," + v + "]");
                }
                compared++;
            }
        assertTrue(compared > B, what + ": compared only " + compared + " positions");
    }

    /** `score`'s numbers: HF tokenizer ids and mean next-token loss, base and with the PEFT adapter (1e-4 relative). */
    @ParameterizedTest
    @ValueSource(strings = {"llama", "qwen2"})
    void scoreMatchesHfTokenizerAndLoss(String family) {
        try (GoldenFixtures g = GoldenFixtures.fromClasspath(family); CpuBackend be = new CpuBackend();
             org.sparselora.engine.tokenizer.Tokenizer tok = org.sparselora.engine.tokenizer.Tokenizers.load(g.tokenizerJson());
             LlamaWeights w = LlamaWeights.upload(be, g.model())) {
            LlamaModel model = new LlamaModel(be, w);
            try (LoraAdapter lora = LoraAdapter.fromPeft(be, w.config, g.adapter(), g.adapterDir())) {
                for (boolean withAdapter : new boolean[] {false, true}) {
                    var scorer = new org.sparselora.engine.eval.Scorer(model, withAdapter ? lora : null, tok, 256);
                    var expected = g.scoreExpected(withAdapter);
                    var texts = g.scoreTexts();
                    var ids = g.scoreIds();
                    assertEquals(texts.size(), expected.size());
                    for (int i = 0; i < texts.size(); i++) {
                        org.junit.jupiter.api.Assertions.assertArrayEquals(ids.get(i), tok.encode(texts.get(i), true), family + " ids of text " + i);
                        var s = scorer.score(texts.get(i));
                        assertEquals(expected.get(i).tokens(), s.tokens(), family + " tokens of text " + i);
                        assertEquals(expected.get(i).loss(), s.loss(), 1e-4 * expected.get(i).loss(), family + " loss of text " + i + (withAdapter ? " (adapter)" : ""));
                    }
                }
            }
        }
    }
}
