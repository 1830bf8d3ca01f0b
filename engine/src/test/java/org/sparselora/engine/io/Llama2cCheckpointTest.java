package org.sparselora.engine.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.RandomWeights;

/** The llama2.c reader on files written here: layout, the q/k row permutation, untied heads, truncation. */
class Llama2cCheckpointTest {

    /** Writes a llama2.c file from HF-named weights, turning q/k rows back into Meta's interleaved layout. */
    static void write(Path file, WeightSource w, boolean untied) throws IOException {
        LlamaConfig c = w.config();
        int dim = c.hiddenSize(), hidden = c.intermediateSize(), L = c.numLayers(), hs = c.headDim();
        ByteBuffer hdr = ByteBuffer.allocate(28).order(ByteOrder.LITTLE_ENDIAN);
        hdr.putInt(dim).putInt(hidden).putInt(L).putInt(c.numHeads()).putInt(c.numKvHeads())
                .putInt(untied ? -c.vocabSize() : c.vocabSize()).putInt(c.maxPositions());
        var out = new java.io.ByteArrayOutputStream();
        out.write(hdr.array());
        put(out, w.get("model.embed_tokens.weight").toFloats());
        for (String kind : new String[] {"input_layernorm", "q", "k", "v", "o", "post_attention_layernorm", "gate", "down", "up"})
            for (int l = 0; l < L; l++) {
                String p = "model.layers." + l + ".";
                switch (kind) {
                    case "input_layernorm", "post_attention_layernorm" -> put(out, w.get(p + kind + ".weight").toFloats());
                    case "q" -> put(out, toMeta(w.get(p + "self_attn.q_proj.weight").toFloats(), c.numHeads(), hs, dim));
                    case "k" -> put(out, toMeta(w.get(p + "self_attn.k_proj.weight").toFloats(), c.numKvHeads(), hs, dim));
                    case "v", "o" -> put(out, w.get(p + "self_attn." + kind + "_proj.weight").toFloats());
                    default -> put(out, w.get(p + "mlp." + kind + "_proj.weight").toFloats());
                }
            }
        put(out, w.get("model.norm.weight").toFloats());
        put(out, new float[c.maxPositions() * hs]); // freq_cis real + imag
        if (untied) put(out, w.get("lm_head.weight").toFloats());
        Files.write(file, out.toByteArray());
    }

    static float[] toMeta(float[] hf, int heads, int hs, int cols) {
        float[] meta = new float[hf.length];
        for (int h = 0; h < heads; h++)
            for (int j = 0; j < 2; j++)
                for (int i = 0; i < hs / 2; i++)
                    System.arraycopy(hf, (h * hs + j * hs / 2 + i) * cols, meta, (h * hs + 2 * i + j) * cols, cols);
        return meta;
    }

    static void put(java.io.ByteArrayOutputStream out, float[] x) {
        ByteBuffer b = ByteBuffer.allocate(x.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (float f : x) b.putFloat(f);
        out.writeBytes(b.array());
    }

    static LlamaConfig cfg(boolean tied) {
        return new LlamaConfig("LlamaForCausalLM", 16, 24, 2, 4, 2, 4, 19, 32, 1e-5f, 10000f, null, tied, false, 1, 2);
    }

    @Test
    void readsEveryTensorBackUnderHfNames(@TempDir Path dir) throws IOException {
        for (boolean untied : new boolean[] {false, true}) {
            RandomWeights src = new RandomWeights(cfg(!untied), 3);
            Path f = dir.resolve("m" + untied + ".bin");
            write(f, src, untied);
            try (Llama2cCheckpoint ck = Llama2cCheckpoint.open(f)) {
                LlamaConfig c = ck.config();
                assertEquals(16, c.hiddenSize());
                assertEquals(2, c.numKvHeads());
                assertEquals(19, c.vocabSize());
                assertEquals(!untied, c.tieWordEmbeddings());
                assertEquals(src.names(), ck.names());
                for (String n : src.names()) {
                    assertArrayEquals(src.get(n).shape(), ck.get(n).shape(), n);
                    assertArrayEquals(src.get(n).toFloats(), ck.get(n).toFloats(), n);
                }
                assertFalse(ck.has("lm_head.weight") == !untied);
            }
        }
    }

    @Test
    void truncatedFileNamesFileAndTensor(@TempDir Path dir) throws IOException {
        Path f = dir.resolve("m.bin");
        write(f, new RandomWeights(cfg(true), 1), false);
        byte[] all = Files.readAllBytes(f);
        Path t = dir.resolve("trunc.bin");
        Files.write(t, java.util.Arrays.copyOf(all, 28 + 19 * 16 * 4 + 2 * 16 * 4 + 100));
        var e = assertThrows(IllegalArgumentException.class, () -> Llama2cCheckpoint.open(t));
        assertTrue(e.getMessage().contains("trunc.bin") && e.getMessage().contains("truncated") && e.getMessage().contains("wq"), e.getMessage());
        Path h = dir.resolve("hdr.bin");
        Files.write(h, new byte[10]);
        assertThrows(IllegalArgumentException.class, () -> Llama2cCheckpoint.open(h));
        assertThrows(IllegalArgumentException.class, () -> Llama2cCheckpoint.open(dir.resolve("missing.bin")));
    }
}
