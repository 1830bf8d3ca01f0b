package org.sparselora.engine.golden;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.io.FullGoldenGradients;
import org.sparselora.engine.io.GoldenFixtures;
import org.sparselora.engine.io.HostTensor;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.train.LlamaFullModel;
import org.sparselora.engine.train.ModelGrads;

/**
 * Full-parameter gradients against HF autograd (the fixtures' {@code expected_full.safetensors}):
 * the gradient of the base model's loss with respect to every parameter of the tiny Llama (untied
 * head, llama3 rope) and Qwen2 (q/k/v biases, tied head, so the embedding's gradient holds the
 * head's), on the fixture's left-padded batch. Tolerances as {@link HfGoldenTest}'s for LoRA
 * gradients: loss 1e-5 relative, each gradient 1e-3 of its tensor's max |grad|. A fixture without
 * the file fails, naming it.
 */
class HfFullGoldenTest {

    @ParameterizedTest
    @ValueSource(strings = {"llama", "qwen2"})
    void everyParameterGradientMatchesHfAutograd(String family) {
        try (GoldenFixtures g = GoldenFixtures.fromClasspath(family); CpuBackend be = new CpuBackend();
             LlamaWeights w = LlamaWeights.upload(be, g.model());
             FullGoldenGradients want = FullGoldenGradients.open(g.dir(), w.config)) {
            Batch batch = HfGoldenTest.batchOf(g);
            LlamaModel model = new LlamaModel(be, w);
            LlamaFullModel full = new LlamaFullModel(model);
            assertEquals(List.copyOf(want.grads().keySet()), List.copyOf(full.parameters().keySet()), family + " parameters");
            try (ModelGrads grads = ModelGrads.zerosLike(be, full.parameters())) {
                double lossSum = full.forwardBackward(batch, grads);
                int n = batch.outputTokenCount();
                assertEquals(want.outputTokens(), n, family + " output tokens");
                assertEquals(want.loss(), lossSum / n, 1e-5 * want.loss(), family + " loss");
                for (Map.Entry<String, HostTensor> e : want.grads().entrySet()) {
                    float[] exp = e.getValue().toFloats(), got = grads.toHost(e.getKey());
                    double max = 0;
                    for (float v : exp) max = Math.max(max, Math.abs(v));
                    assertTrue(max > 0, "fixture gradient " + e.getKey() + " is zero");
                    for (int i = 0; i < exp.length; i++)
                        assertEquals(exp[i], got[i] / n, 1e-3 * max, family + " grad " + e.getKey() + "[" + i + "]");
                }
            }
        }
    }
}
