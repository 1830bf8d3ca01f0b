package org.sparselora.engine.train;

import org.sparselora.engine.model.Batch;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.RecordingBackend;
import org.sparselora.engine.backend.cpu.CpuBackend;

/** Full-parameter steps recorded once per shape and replayed (a CUDA graph's contract, on the CPU's recording proxy) give the eager run's bits. */
class RecordedFullStepTest {
    static final CpuBackend be = new CpuBackend(2);

    @AfterAll
    static void close() { be.close(); }

    @Test
    void theRecordableDoubleComputesWhatTheHostDoubleDoes() {
        RecordableHeadModel a = new RecordableHeadModel(be, 23, 8, 4);
        PointwiseLlama b = new PointwiseLlama(be, 23, 8, 0, false, false, 4);
        Batch x = FullTrainerTest.batch(23, 3, 5, 2);
        try (ModelGrads ga = ModelGrads.zerosLike(be, a.parameters()); ModelGrads gb = ModelGrads.zerosLike(be, b.parameters())) {
            double la = a.forwardBackward(x, ga), lb = b.forwardBackward(x, gb);
            assertEquals(lb, la, 1e-4 * Math.abs(lb));
            for (String n : ga.names()) {
                float[] p = ga.toHost(n), q = gb.toHost(n);
                for (int i = 0; i < p.length; i++) assertEquals(q[i], p[i], 1e-4 + 1e-3 * Math.abs(q[i]), n + "[" + i + "]");
            }
        }
    }

    @Test
    void recordedStepsEqualEagerOnes() {
        Batch[] bs = new Batch[8];
        for (int i = 0; i < bs.length; i++) bs[i] = FullTrainerTest.batch(23, i == 5 ? 3 : 2, 6, 30 + i);   // step 5: another shape
        RecordingBackend.Stats stats = new RecordingBackend.Stats();
        Backend rec = RecordingBackend.wrap(be, stats);
        TrainerState[] out = new TrainerState[2];
        double[][] losses = new double[2][bs.length];
        long replays = 0, recordings = 0;
        for (int k = 0; k < 2; k++) {
            RecordableHeadModel m = new RecordableHeadModel(k == 0 ? be : rec, 23, 8, 4);
            try (FullTrainer t = new FullTrainer(m, null, FullTrainerTest.opt(1e-2f, 0.1f, 1f), false)) {
                for (int s = 0; s < bs.length; s++) {
                    StepResult r = t.computeGradients(bs[s], s, false);
                    losses[k][s] = r.lossSum();
                    t.applyUpdate(s, r.outputTokens());
                }
                out[k] = t.state();
                replays = t.replayedSteps();
                recordings = t.recordedSteps();
            }
        }
        assertArrayEquals(losses[0], losses[1]);
        for (String n : out[0].tensors().keySet()) assertArrayEquals(out[0].tensors().get(n), out[1].tensors().get(n), n);
        // shape A: eager (0), recorded (1), replayed (2, 3, 4); shape B at 5 is new buffers: A is recorded again at 6 and replayed at 7
        assertEquals(2, recordings);
        assertEquals(4, replays);
        assertEquals(true, stats.replayed > 0);
    }
}
