package org.sparselora.engine.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.model.LlamaConfig;

/**
 * Writes, with the Java writers, the directory that {@code engine/src/test/python/hf_interop_check.py}
 * loads with HF transformers and PEFT on the GPU machine ({@code engine/target/hf-interop/}: a GQA
 * Llama with llama3 rope scaling and a tied Qwen2 with biases, each as F32, sharded BF16, a PEFT
 * adapter and the adapter-merged checkpoint), and checks here that they read back. Weights are
 * bf16-representable so the F32 and BF16 copies must give identical logits in HF.
 */
class HfInteropFilesTest {

    static final Path OUT = Path.of("target", "hf-interop");

    @Test
    void writesCheckpointsAndAdaptersForTheHfInteropCheck() {
        LlamaConfig llama = new LlamaConfig("LlamaForCausalLM", 64, 96, 2, 4, 2, 16, 120, 256, 1e-5f, 10000f,
                new LlamaConfig.RopeScaling("llama3", 8f, 1f, 4f, 32), false, false, 1, 2);
        LlamaConfig qwen = new LlamaConfig("Qwen2ForCausalLM", 64, 96, 2, 4, 2, 16, 120, 256, 1e-6f, 1e6f,
                null, true, true, -1, 2);
        write(OUT.resolve("llama"), llama, List.copyOf(PeftAdapter.MODULES.keySet()), false, 1);
        write(OUT.resolve("qwen2"), qwen, List.of("q_proj", "v_proj", "down_proj"), true, 2);
    }

    private static void write(Path d, LlamaConfig c, List<String> targets, boolean rslora, long seed) {
        Random r = new Random(seed);
        LinkedHashMap<String, HostTensor> m = new LinkedHashMap<>();
        HfCheckpoint.expectedShapes(c).forEach((name, shape) -> {
            int n = 1;
            for (int x : shape) n *= x;
            float[] v = new float[n];
            for (int i = 0; i < n; i++) {
                double g = r.nextGaussian();
                float f = (float) (name.contains("norm") ? 1 + 0.1 * g : (name.endsWith(".bias") ? 0.1 : 0.05) * g);
                v[i] = Dtypes.bf16ToFloat(Dtypes.floatToBf16(f));
            }
            m.put(name, new HostTensor(name, DType.F32, shape, Dtypes.fromFloats(DType.F32, v)));
        });
        HfFormatsTest.MapSource src = new HfFormatsTest.MapSource(c, m);
        HfCheckpointWriter.write(src, null, d.resolve("model"), DType.F32, 0, null);
        HfCheckpointWriter.write(src, null, d.resolve("model-bf16"), DType.BF16, 60_000, null);
        AdapterFiles a = HfFormatsTest.randomAdapter(c, 4, targets, rslora, seed + 100);
        // PEFT-sized values: B·A should nudge the logits, not swamp them
        a.tensors().values().forEach(v -> { for (int i = 0; i < v.length; i++) v[i] *= 0.1f; });
        PeftAdapter.write(d.resolve("adapter"), a);
        HfCheckpointWriter.write(src, a, d.resolve("merged"), DType.F32, 0, null);

        try (HfCheckpoint f32 = HfCheckpoint.open(d.resolve("model"));
             HfCheckpoint bf16 = HfCheckpoint.open(d.resolve("model-bf16"))) {
            assertEquals(c, f32.config());
            assertEquals(c, bf16.config());
            for (String n : src.names()) assertArrayEquals(f32.get(n).toFloats(), bf16.get(n).toFloats(), n);
        }
        assertEquals(a.spec(), PeftAdapter.read(d.resolve("adapter")).spec());
    }
}
