package org.sparselora.engine.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.model.LlamaConfig;

/** Reading {@code expected_full.safetensors} as {@code export_hf_golden.py --full} writes it, and refusing one that does not fit the model. */
class FullGoldenGradientsTest {
    @TempDir Path dir;

    static final LlamaConfig QWEN = new LlamaConfig("Qwen2ForCausalLM", 8, 16, 1, 2, 1, 4, 20, 64, 1e-6f, 1e6f, null, true, true, -1, 19);

    void write(LlamaConfig c, String drop, String extra) {
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        Map<String, int[]> shapes = new LinkedHashMap<>();
        t.put("loss", new float[] {2.5f});
        shapes.put("loss", new int[] {1});
        t.put("output_tokens", new float[] {14f});
        shapes.put("output_tokens", new int[] {1});
        HfCheckpoint.expectedShapes(c).forEach((n, s) -> {
            if (n.equals(drop)) return;
            int k = 1;
            for (int d : s) k *= d;
            float[] g = new float[k];
            for (int i = 0; i < k; i++) g[i] = n.length() + i * 1e-3f;
            t.put("grad." + n, g);
            shapes.put("grad." + n, s);
        });
        if (extra != null) { t.put(extra, new float[] {1}); shapes.put(extra, new int[] {1}); }
        Safetensors.writeFloats(dir.resolve(FullGoldenGradients.FILE), t, shapes, DType.F32, Map.of());
    }

    @Test
    void everyParameterGradientIsThereUnderItsHfName() {
        write(QWEN, null, null);
        try (FullGoldenGradients g = FullGoldenGradients.open(dir, QWEN)) {
            assertEquals(2.5f, g.loss());
            assertEquals(14, g.outputTokens());
            assertEquals(List.copyOf(HfCheckpoint.expectedShapes(QWEN).keySet()), List.copyOf(g.grads().keySet()));
            assertTrue(g.grads().containsKey("model.layers.0.self_attn.k_proj.bias"));
            assertEquals("model.norm.weight".length(), g.grads().get("model.norm.weight").toFloats()[0]);
            assertArrayEquals(new int[] {20, 8}, g.grads().get("model.embed_tokens.weight").shape());
        }
    }

    @Test
    void aMissingOrForeignTensorIsNamed() {
        FormatException none = assertThrows(FormatException.class, () -> FullGoldenGradients.open(dir, QWEN));
        assertTrue(none.getMessage().contains("export_hf_golden.py --full"), none.getMessage());
        write(QWEN, "model.layers.0.mlp.up_proj.weight", null);
        FormatException miss = assertThrows(FormatException.class, () -> FullGoldenGradients.open(dir, QWEN));
        assertTrue(miss.getMessage().contains("grad.model.layers.0.mlp.up_proj.weight"), miss.getMessage());
        write(QWEN, null, "grad.lm_head.weight");
        FormatException tied = assertThrows(FormatException.class, () -> FullGoldenGradients.open(dir, QWEN));
        assertTrue(tied.getMessage().contains("grad.lm_head.weight") && tied.getMessage().contains("tied"), tied.getMessage());
    }
}
