package org.sparselora.engine.lora;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.model.TinyModels;

/** LoRA init, names, scaling and host round trips. */
class LoraAdapterTest {

    @Test
    void scalingAndValidation() {
        var t = EnumSet.of(Projection.Q);
        assertEquals(2f, new LoraConfig(32, 64f, 0f, t, false, 0).scaling());
        assertEquals(64f / (float) Math.sqrt(32), new LoraConfig(32, 64f, 0f, t, true, 0).scaling(), 1e-6);
        assertThrows(IllegalArgumentException.class, () -> new LoraConfig(0, 1f, 0f, t, false, 0));
        assertThrows(IllegalArgumentException.class, () -> new LoraConfig(4, 1f, 1f, t, false, 0));
        assertThrows(IllegalArgumentException.class, () -> new LoraConfig(4, 1f, 0f, EnumSet.noneOf(Projection.class), false, 0));
        assertEquals(EnumSet.allOf(Projection.class), LoraConfig.targetsOf(List.of("all-linear")));
        var e = assertThrows(IllegalArgumentException.class, () -> LoraConfig.targetsOf(List.of("q_proj", "qkv")));
        assertTrue(e.getMessage().contains("'qkv'"));
    }

    @Test
    void initNamesAndRoundTrip() {
        LlamaConfig c = TinyModels.config(false, false, false);
        try (CpuBackend be = new CpuBackend(1)) {
            LoraAdapter a = new LoraAdapter(be, c, new LoraConfig(3, 6f, 0f, EnumSet.of(Projection.V, Projection.DOWN), false, 11));
            assertEquals(List.of(
                    "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight",
                    "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight", "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight",
                    "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight", "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight",
                    "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight", "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"), a.names());
            LinkedHashMap<String, float[]> h = a.toHost();
            float[] downA = h.get("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight");
            assertEquals(3 * c.intermediateSize(), downA.length);
            double bound = 1 / Math.sqrt(c.intermediateSize()), max = 0;
            for (float x : downA) max = Math.max(max, Math.abs(x));
            assertTrue(max <= bound && max > 0.8 * bound, "kaiming-uniform(a=√5) bound 1/√in: " + max);
            for (float x : h.get("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")) assertEquals(0f, x);
            assertEquals(a.parameterCount(), h.values().stream().mapToLong(x -> x.length).sum());
            // same seed, same init; round trip through host
            LoraAdapter b = new LoraAdapter(be, c, a.config());
            assertArrayEquals(downA, b.toHost().get("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"));
            h.get("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")[2] = 5f;
            b.fromHost(h);
            assertEquals(5f, b.toHost().get("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")[2]);
            h.put("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", new float[3]);
            var e = assertThrows(IllegalArgumentException.class, () -> b.fromHost(h));
            assertTrue(e.getMessage().contains("layers.0.self_attn.v_proj.lora_A.weight"));
        }
    }
}
