package org.sparselora.engine.golden;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Path;
import java.util.TreeSet;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparselora.engine.io.GoldenFixtures;
import org.sparselora.engine.io.PeftAdapter;
import org.sparselora.engine.io.Safetensors;

/**
 * An adapter written here has the on-disk layout PEFT itself wrote for the same adapter (the
 * golden fixture's {@code adapter/}, saved by peft 0.21 {@code save_pretrained}): the same
 * safetensors keys with the same dtypes and shapes, and an {@code adapter_config.json} whose fields
 * PEFT reads to rebuild the LoRA layers carry the same values. (Loading it in PEFT itself is
 * {@code engine/src/test/python/hf_interop_check.py}, run on the GPU machine.)
 */
class PeftFileLayoutTest {

    @ParameterizedTest
    @ValueSource(strings = {"llama", "qwen2"})
    void javaWrittenAdapterMatchesPeftsOwnFiles(String family, @TempDir Path tmp) throws Exception {
        try (GoldenFixtures g = GoldenFixtures.fromClasspath(family)) {
            Path ours = tmp.resolve("adapter");
            PeftAdapter.write(ours, g.adapter());
            try (Safetensors peft = Safetensors.open(g.adapterDir().resolve("adapter_model.safetensors"));
                 Safetensors mine = Safetensors.open(ours.resolve("adapter_model.safetensors"))) {
                assertEquals(new TreeSet<>(peft.names()), new TreeSet<>(mine.names()), family + ": tensor keys");
                for (String k : peft.names()) {
                    assertEquals(peft.get(k).dtype(), mine.get(k).dtype(), family + ": dtype of " + k);
                    assertArrayEquals(peft.get(k).shape(), mine.get(k).shape(), family + ": shape of " + k);
                    assertArrayEquals(peft.get(k).toFloats(), mine.get(k).toFloats(), family + ": values of " + k);
                }
            }
            ObjectMapper json = new ObjectMapper();
            JsonNode p = json.readTree(g.adapterDir().resolve("adapter_config.json").toFile());
            JsonNode m = json.readTree(ours.resolve("adapter_config.json").toFile());
            for (String field : new String[] {"peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "bias",
                    "fan_in_fan_out", "use_rslora", "use_dora"}) {
                assertTrue(m.has(field), family + ": adapter_config.json lacks " + field);
                if (p.get(field).isNumber()) // PEFT writes lora_alpha 8, we write 8.0: the same number to Python
                    assertEquals(p.get(field).asDouble(), m.get(field).asDouble(), 0.0, family + ": adapter_config.json " + field);
                else
                    assertEquals(p.get(field).asText(), m.get(field).asText(), family + ": adapter_config.json " + field);
            }
            TreeSet<String> pt = new TreeSet<>(), mt = new TreeSet<>();
            p.get("target_modules").forEach(n -> pt.add(n.asText()));
            m.get("target_modules").forEach(n -> mt.add(n.asText()));
            assertEquals(pt, mt, family + ": target_modules");
        }
    }
}
