package org.sparselora.engine.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.model.TinyModels;

/**
 * Gradient accumulation in LoRA mode: k micro-batches through {@link LoraTrainer#computeGradients}
 * before one {@link LoraTrainer#applyUpdate} (normalised by the output tokens of all of them) train
 * exactly what one batch of all their rows trains — same loss sum, same gradients, same LoRA weights
 * after several updates, up to the order of float additions (CPU, F32).
 */
class GradAccumulationTest {
    static final CpuBackend cpu = new CpuBackend(2);

    @AfterAll
    static void close() { cpu.close(); }

    static final LlamaConfig C = TinyModels.config(false, false, false);

    /** Rows [from, from+n) of b. */
    static Batch rows(Batch b, int from, int n) {
        int t = b.seqLen();
        return new Batch(n, t, Arrays.copyOfRange(b.tokens(), from * t, (from + n) * t), Arrays.copyOfRange(b.targets(), from * t, (from + n) * t),
                Arrays.copyOfRange(b.positions(), from * t, (from + n) * t), Arrays.copyOfRange(b.keyStart(), from, from + n));
    }

    record Run(double[] losses, List<float[]> grads, List<float[]> params) {}

    /** {@code steps} updates over 6-row batches, each as {@code k} micro-batches of 6/k rows. */
    static Run train(int k, int steps) {
        try (LlamaModel model = TinyModels.model(cpu, C, 3);
             LoraAdapter lora = TinyModels.adapter(cpu, C, 0f, 4, EnumSet.allOf(Projection.class))) {
            LoraTrainer tr = new LoraTrainer(model, lora, OptimizerConfig.defaults(steps)).setShapeBucket(0);
            double[] losses = new double[steps];
            List<float[]> firstGrads = null;
            for (int s = 0; s < steps; s++) {
                // rows of different padding and prompt lengths, so micro-batches differ in output tokens
                Batch b = TinyModels.batch(C, 50 + s, 7, new int[] {0, 2, 1, 3, 0, 1}, 2 + s % 2);
                int per = b.batch() / k, outputs = 0;
                for (int j = 0; j < k; j++) {
                    StepResult r = tr.computeGradients(rows(b, j * per, per), s, false);
                    losses[s] += r.lossSum();
                    outputs += r.outputTokens();
                }
                assertEquals(b.outputTokenCount(), outputs, "the micro-batches cover the batch's output tokens");
                if (s == 0) firstGrads = TinyModels.host(cpu, lora.grads());
                tr.applyUpdate(s, outputs);
            }
            List<float[]> params = TinyModels.host(cpu, lora.params());
            tr.close();
            return new Run(losses, firstGrads, params);
        }
    }

    static void assertClose(List<float[]> want, List<float[]> got, double rel, String what) {
        for (int i = 0; i < want.size(); i++) {
            double num = 0, den = 0;
            for (int j = 0; j < want.get(i).length; j++) {
                double d = got.get(i)[j] - want.get(i)[j];
                num += d * d;
                den += (double) want.get(i)[j] * want.get(i)[j];
            }
            assertTrue(den > 0, what + " tensor " + i + " is all zero");
            assertTrue(Math.sqrt(num / den) <= rel, what + " tensor " + i + ": relative difference " + Math.sqrt(num / den));
        }
    }

    @Test
    void kMicroBatchesEqualOneBatchKTimesLarger() {
        Run whole = train(1, 4);
        for (int k : new int[] {2, 3, 6}) {
            Run acc = train(k, 4);
            for (int s = 0; s < 4; s++) assertEquals(whole.losses()[s], acc.losses()[s], 1e-5 * Math.abs(whole.losses()[s]), "loss sum of step " + s + ", k=" + k);
            assertClose(whole.grads(), acc.grads(), 1e-5, "step 0's summed gradients, k=" + k);
            assertClose(whole.params(), acc.params(), 1e-5, "LoRA weights after 4 updates, k=" + k);
        }
    }

    @Test
    void accumulationIsNotANoOp() {
        // one micro-batch alone is a different update: the test above would notice a trainer that dropped the others
        try (LlamaModel model = TinyModels.model(cpu, C, 3);
             LoraAdapter lora = TinyModels.adapter(cpu, C, 0f, 4, EnumSet.allOf(Projection.class))) {
            LoraTrainer tr = new LoraTrainer(model, lora, OptimizerConfig.defaults(1)).setShapeBucket(0);
            Batch b = TinyModels.batch(C, 50, 7, new int[] {0, 2, 1, 3, 0, 1}, 2);
            tr.computeGradients(rows(b, 0, 3), 0, false);
            List<float[]> half = TinyModels.host(cpu, lora.grads());
            tr.close();
            Run whole = train(1, 1);
            double num = 0;
            for (int i = 0; i < half.size(); i++)
                for (int j = 0; j < half.get(i).length; j++) num += Math.abs(half.get(i)[j] - whole.grads().get(i)[j]);
            assertTrue(num > 1e-3, "half a batch's gradients differ from the whole batch's");
        }
    }
}
