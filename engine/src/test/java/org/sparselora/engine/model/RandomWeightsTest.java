package org.sparselora.engine.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.io.HfCheckpoint;

/** The pretraining initializer (statistics, seeding) and the from-scratch presets. */
class RandomWeightsTest {

    static double[] meanStd(float[] x) {
        double s = 0, ss = 0;
        for (float v : x) s += v;
        double mean = s / x.length;
        for (float v : x) ss += (v - mean) * (v - mean);
        return new double[] {mean, Math.sqrt(ss / x.length)};
    }

    @Test
    void pretrainInitHasTheDocumentedStatistics() {
        LlamaConfig c = RandomWeights.preset("small-8m", 4096, 1, 2);
        RandomWeights rw = new RandomWeights(c, 42, RandomWeights.Scheme.PRETRAIN);
        double resid = 0.02 / Math.sqrt(2 * c.numLayers());
        for (String n : rw.names()) {
            float[] x = rw.get(n).toFloats();
            if (n.endsWith("norm.weight")) {
                for (float v : x) assertEquals(1f, v, n);
                continue;
            }
            double want = n.endsWith("o_proj.weight") || n.endsWith("down_proj.weight") ? resid : 0.02;
            double[] ms = meanStd(x);
            // x.length ≥ 32k draws: the sample std is within a few percent, the mean within a few std/√n
            assertEquals(want, ms[1], 0.03 * want, n + " std");
            assertEquals(0, ms[0], 5 * want / Math.sqrt(x.length), n + " mean");
            assertEquals(want, rw.meanStd(n)[1], 1e-9, n);
        }
        assertFalse(rw.names().contains("lm_head.weight"), "presets tie the head to the embedding");
    }

    @Test
    void pretrainBiasesAreZeroAndNormsOne() {
        LlamaConfig qwen = new LlamaConfig("Qwen2ForCausalLM", 32, 64, 2, 4, 2, 8, 50, 64, 1e-6f, 1e6f, null, false, true, 1, 2);
        RandomWeights rw = new RandomWeights(qwen, 3, RandomWeights.Scheme.PRETRAIN);
        int biases = 0;
        for (String n : rw.names()) {
            if (!n.endsWith(".bias")) continue;
            biases++;
            for (float v : rw.get(n).toFloats()) assertEquals(0, Float.floatToRawIntBits(v), n + ": +0.0 exactly");
        }
        assertEquals(6, biases);
        for (float v : rw.get("model.norm.weight").toFloats()) assertEquals(1f, v);
        assertEquals(0.02, meanStd(rw.get("lm_head.weight").toFloats())[1], 0.002, "an untied head is a matrix like any other");
    }

    @Test
    void sameSeedSameWeightsInAnyOrderOtherSeedOtherWeights() {
        LlamaConfig c = RandomWeights.preset("tiny-1m", 300, 1, 2);
        RandomWeights a = new RandomWeights(c, 7, RandomWeights.Scheme.PRETRAIN);
        RandomWeights b = new RandomWeights(c, 7, RandomWeights.Scheme.PRETRAIN);
        RandomWeights other = new RandomWeights(c, 8, RandomWeights.Scheme.PRETRAIN);
        String[] names = a.names().toArray(String[]::new);
        float[][] first = new float[names.length][];
        for (int i = 0; i < names.length; i++) first[i] = a.get(names[i]).toFloats();
        for (int i = names.length - 1; i >= 0; i--) {
            assertArrayEquals(first[i], b.get(names[i]).toFloats(), names[i]);
            if (!names[i].contains("norm")) assertFalse(Arrays.equals(first[i], other.get(names[i]).toFloats()), names[i]);
        }
        assertFalse(Arrays.equals(a.get("model.layers.0.mlp.up_proj.weight").toFloats(), a.get("model.layers.1.mlp.up_proj.weight").toFloats()),
                "every tensor has its own stream");
    }

    @Test
    void testSchemeIsUnchangedByTheNewOne() {
        LlamaConfig c = TinyModels.config(false, true, false);
        RandomWeights t = new RandomWeights(c, 5), t2 = new RandomWeights(c, 5, RandomWeights.Scheme.TEST);
        RandomWeights p = new RandomWeights(c, 5, RandomWeights.Scheme.PRETRAIN);
        for (String n : t.names()) assertArrayEquals(t.get(n).toFloats(), t2.get(n).toFloats(), n);
        // the same streams: the pretraining draw of a plain matrix is the test draw rescaled
        String q = "model.layers.0.self_attn.q_proj.weight";
        float[] a = t.get(q).toFloats(), b = p.get(q).toFloats();
        double ratio = 0.02 / t.meanStd(q)[1];
        for (int i = 0; i < a.length; i++) assertEquals(a[i] * ratio, b[i], 1e-6, q + "[" + i + "]");
        assertEquals(RandomWeights.Scheme.PRETRAIN, RandomWeights.Scheme.parse("pretrain"));
        assertThrows(IllegalArgumentException.class, () -> RandomWeights.Scheme.parse("xavier"));
    }

    @Test
    void presetsHaveTheAdvertisedSizes() {
        long[] want = {1_050_000, 8_400_000, 30_400_000};
        String[] names = RandomWeights.PRESET_NAMES.split(", ");
        assertEquals(3, names.length);
        for (int i = 0; i < names.length; i++) {
            LlamaConfig c = RandomWeights.preset(names[i], 512, 1, 2);
            long nonEmbedding = 0;
            for (var e : HfCheckpoint.expectedShapes(c).entrySet()) {
                if (e.getKey().contains("embed_tokens")) continue;
                long n = 1;
                for (int d : e.getValue()) n *= d;
                nonEmbedding += n;
            }
            assertEquals(want[i], nonEmbedding, 0.01 * want[i], names[i]);
            assertTrue(c.tieWordEmbeddings());
            assertEquals(512, c.vocabSize());
            assertEquals(0, c.hiddenSize() % c.numHeads());
        }
        assertNull(RandomWeights.preset("huge-7b", 512, 1, 2));
        assertThrows(IllegalArgumentException.class, () -> RandomWeights.preset("tiny-1m", 0, 1, 2));
    }
}
