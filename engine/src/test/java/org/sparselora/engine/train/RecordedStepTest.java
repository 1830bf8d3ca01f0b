package org.sparselora.engine.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.function.Function;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.RecordingBackend;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.model.RandomWeights;
import org.sparselora.engine.model.TinyModels;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.engine.sparse.SparsePlanner;
import org.sparselora.engine.sparse.SparsityConfig;
import org.sparselora.engine.sparse.SvdPredictor;
import org.sparselora.engine.model.Batch;

/**
 * Recorded training steps (CUDA graphs on the GPU) against eager ones, on the CPU through
 * {@link RecordingBackend} (a replay re-runs the recorded calls with the recorded arguments, as a
 * graph does): the trainer records a step's device work the second time its shape comes up and
 * replays it afterwards, and every step — dense, SparseLoRA with in-flight selection and a token
 * split that changes every step, a plan held fixed — gives the same loss, gradient norm and LoRA
 * weights, bit for bit, as the eager run over batches whose tokens and targets differ step to step.
 */
class RecordedStepTest {
    static final CpuBackend cpu = new CpuBackend(2);

    @AfterAll
    static void close() { cpu.close(); }

    static final LlamaConfig C = TinyModels.config(false, false, false);

    /** Batches of one shape (same padding and prompt lengths, so the same output rows) with new tokens and targets. */
    static Batch batch(int step) { return TinyModels.batch(C, 100 + step, 7, new int[] {0, 2}, 3); }

    record Run(List<Double> losses, List<Double> norms, List<float[]> params, long replays, long recordings) {}

    /** Trains `steps` steps on be; planner may be null (dense). */
    /** Shape buckets off (the default here: tiny batches) unless a test asks. */
    static Run train(Backend be, int steps, float dropout, Function<Backend, SparsePlannerFactory> sparse, Function<Integer, Batch> data) {
        return train(be, steps, dropout, sparse, data, 0);
    }

    static Run train(Backend be, int steps, float dropout, Function<Backend, SparsePlannerFactory> sparse, Function<Integer, Batch> data, int bucket) {
        return train(be, steps, dropout, sparse, data, bucket, (step, model, lora, tr) -> {});
    }

    /** What a test does after each step (evaluate, restore a state, …), the same in the eager and the recorded run. */
    interface AfterStep { void after(int step, LlamaModel model, LoraAdapter lora, LoraTrainer tr); }

    static Run train(Backend be, int steps, float dropout, Function<Backend, SparsePlannerFactory> sparse, Function<Integer, Batch> data, int bucket,
                     AfterStep after) {
        RandomWeights src = new RandomWeights(C, 3);
        try (LlamaModel model = new LlamaModel(be, LlamaWeights.upload(be, src));
             LoraAdapter lora = TinyModels.adapter(be, C, dropout, 4, EnumSet.allOf(Projection.class))) {
            LoraTrainer tr = new LoraTrainer(model, lora, OptimizerConfig.defaults(steps)).setShapeBucket(bucket);
            AutoCloseable planner = null;
            if (sparse != null) {
                SparsePlannerFactory f = sparse.apply(be);
                org.sparselora.engine.sparse.StepPlanner p = f.make(src, model, lora, steps);
                planner = f.closer();
                tr.setSparsePlanner(p);
            }
            List<Double> losses = new ArrayList<>(), norms = new ArrayList<>();
            for (int s = 0; s < steps; s++) {
                Batch b = data.apply(s);
                StepResult r = tr.computeGradients(b, s, sparse != null);
                losses.add(r.lossSum());
                tr.applyUpdate(s, b.outputTokenCount());
                norms.add(tr.lastGradNorm());
                after.after(s, model, lora, tr);
            }
            Run run = new Run(losses, norms, TinyModels.host(be, lora.params()), tr.replayedSteps(), tr.recordedSteps());
            tr.close();
            if (planner != null) planner.close();
            return run;
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    interface SparsePlannerFactory {
        org.sparselora.engine.sparse.StepPlanner make(RandomWeights src, LlamaModel model, LoraAdapter lora, int steps);

        AutoCloseable closer();
    }

    static SparsePlannerFactory inFlight(Backend be, String extra) {
        SparsePlanner[] hold = new SparsePlanner[1];
        return new SparsePlannerFactory() {
            @Override public org.sparselora.engine.sparse.StepPlanner make(RandomWeights src, LlamaModel model, LoraAdapter lora, int steps) {
                SparsityConfig cfg = TinyModels.sparsity(extra, "recorded-step-test");
                return hold[0] = SparsePlanner.create(be, src, cfg, null, steps, 5, SvdPredictor.Progress.NONE);
            }
            @Override public AutoCloseable closer() { return hold[0]; }
        };
    }

    static void assertSame(Run eager, Run rec) {
        assertEquals(eager.losses(), rec.losses(), "losses, step by step");
        assertEquals(eager.norms(), rec.norms(), "gradient norms, step by step");
        for (int i = 0; i < eager.params().size(); i++) assertArrayEquals(eager.params().get(i), rec.params().get(i), "LoRA tensor " + i);
    }

    @Test
    void denseStepsReplayedEqualEagerSteps() {
        RecordingBackend.Stats st = new RecordingBackend.Stats();
        Run eager = train(cpu, 6, 0f, null, RecordedStepTest::batch);
        Run rec = train(RecordingBackend.wrap(cpu, st), 6, 0f, null, RecordedStepTest::batch);
        assertEquals(0, eager.replays(), "the CPU backend itself records nothing");
        assertEquals(1, rec.recordings(), "recorded once, at the second step of the shape");
        assertEquals(4, rec.replays(), "steps 3..6 are replays");
        assertTrue(st.replayed > 4 * 100, "a replay re-runs the step's ops: " + st.replayed);
        assertSame(eager, rec);
        assertNotEquals(eager.losses().get(2), eager.losses().get(3), "the batches differ from step to step");
    }

    @Test
    void sparseStepsWithInFlightSelectionAndAMovingTokenSplitReplayedEqualEager() {
        // half of the output tokens run sparse too, drawn anew each step: the split's contents change, its sizes do not
        String extra = "sparse_output_tokens: 0.5\n";
        Run eager = train(cpu, 6, 0f, be -> inFlight(be, extra), RecordedStepTest::batch);
        Run rec = train(RecordingBackend.wrap(cpu, new RecordingBackend.Stats()), 6, 0f, be -> inFlight(be, extra), RecordedStepTest::batch);
        assertTrue(rec.replays() >= 3, "sparse steps replayed: " + rec.replays());
        assertSame(eager, rec);
        for (String fg : new String[] {"frozen_grad: cut\n", "skip_output_tokens: false\n"}) {
            Run e2 = train(cpu, 5, 0f, be -> inFlight(be, fg), RecordedStepTest::batch);
            Run r2 = train(RecordingBackend.wrap(cpu, new RecordingBackend.Stats()), 5, 0f, be -> inFlight(be, fg), RecordedStepTest::batch);
            assertTrue(r2.replays() >= 2, fg + " replayed: " + r2.replays());
            assertSame(e2, r2);
        }
    }

    @Test
    void batchesThatDifferOnlyInPaddingAreDifferentShapes() {
        // same B, T, output count and token split sizes; the padding moves (2 then 1 + 3 padded positions
        // in sequence 1, prompt shortened by one): the selector scores a different number of real rows
        Function<Integer, Batch> data = s -> s % 2 == 0 ? TinyModels.batch(C, 300 + s, 7, new int[] {0, 2}, 3)
                : TinyModels.batch(C, 300 + s, 7, new int[] {1, 3}, 2);
        Run eager = train(cpu, 8, 0f, be -> inFlight(be, ""), data);
        Run rec = train(RecordingBackend.wrap(cpu, new RecordingBackend.Stats()), 8, 0f, be -> inFlight(be, ""), data);
        assertEquals(2, rec.recordings(), "one recording per padding layout");
        assertEquals(4, rec.replays());
        assertSame(eager, rec);
    }

    @Test
    void denseStepsWithDifferentOutputCountsShareOneRecording() {
        // fixed-length batches of real data: the prompt length (so the output count) changes every step;
        // the head's rows are padded to one bucket, so one recording serves them all
        Function<Integer, Batch> data = s -> TinyModels.batch(C, 400 + s, 7, new int[] {0, 2}, 1 + s % 3);
        Run eager = train(cpu, 7, 0f, null, data, -1);   // -1: buckets exactly when recording (none here)
        Run rec = train(RecordingBackend.wrap(cpu, new RecordingBackend.Stats()), 7, 0f, null, data, -1);
        assertEquals(1, rec.recordings());
        assertEquals(5, rec.replays());
        assertSame(eager, rec);
    }

    /** Fixed-length batches of real data: padding and output counts change every step (A, B, C below). */
    static Batch ragged(int s) {
        return switch (s % 3) {
            case 0 -> TinyModels.batch(C, 500 + s, 7, new int[] {0, 2}, 3);   // 6 outputs, 2 padding
            case 1 -> TinyModels.batch(C, 500 + s, 7, new int[] {1, 3}, 2);   // 6 outputs, 4 padding
            default -> TinyModels.batch(C, 500 + s, 7, new int[] {0, 1}, 3);  // 7 outputs, 1 padding
        };
    }

    @Test
    void sparseStepsOfRaggedBatchesShareOneRecordingInShapeBuckets() {
        // buckets of 4: dense group 6 or 7 → 8 tokens, head 8 rows, the selection scores all 14 rows (padding zeroed)
        Run eager = train(cpu, 9, 0f, be -> inFlight(be, ""), RecordedStepTest::ragged, 4);
        Run rec = train(RecordingBackend.wrap(cpu, new RecordingBackend.Stats()), 9, 0f, be -> inFlight(be, ""), RecordedStepTest::ragged, 4);
        assertEquals(1, rec.recordings(), "one shape for every batch");
        assertEquals(7, rec.replays());
        assertSame(eager, rec);
        // without buckets every layout is its own shape
        Run unbucketed = train(RecordingBackend.wrap(cpu, new RecordingBackend.Stats()), 9, 0f, be -> inFlight(be, ""), RecordedStepTest::ragged, 0);
        assertEquals(3, unbucketed.recordings());
    }

    @Test
    void bucketsThatMoveOnlyPaddingChangeNothingButRounding() {
        // layouts A and B fill their dense bucket from padding alone: what real tokens compute is unchanged
        Function<Integer, Batch> ab = s -> ragged(s % 2);
        Run plain = train(cpu, 6, 0f, be -> inFlight(be, ""), ab, 0);
        Run bucketed = train(cpu, 6, 0f, be -> inFlight(be, ""), ab, 4);
        for (int s = 0; s < 6; s++)
            assertEquals(plain.losses().get(s), bucketed.losses().get(s), 1e-5 * Math.abs(plain.losses().get(s)), "step " + s);
        for (int i = 0; i < plain.params().size(); i++) {
            float[] x = plain.params().get(i), y = bucketed.params().get(i);
            for (int j = 0; j < x.length; j++) assertEquals(x[j], y[j], 1e-5, "LoRA tensor " + i + " [" + j + "]");
        }
    }

    @Test
    void evaluationsAndARestoredStateBetweenRecordedStepsChangeNothing() {
        // what a job does between steps: evaluate held-out batches (same shape: the activation buffers
        // are shared with the recorded step) and, on resume, restore a trainer state into the same buffers
        TrainerState[] saved = new TrainerState[1];
        double[] evalSum = new double[2];
        int[] run = {0};
        AfterStep after = (step, model, lora, tr) -> {
            evalSum[run[0]] += model.evaluate(batch(900 + step), lora, null, false).lossSum();
            if (step == 1) saved[0] = tr.state();
            if (step == 4) tr.restore(saved[0]);   // rewind to the state after step 1
        };
        Run eager = train(cpu, 8, 0f, be -> inFlight(be, "sparse_output_tokens: 0.5\n"), RecordedStepTest::batch, 0, after);
        run[0] = 1;
        Run rec = train(RecordingBackend.wrap(cpu, new RecordingBackend.Stats()), 8, 0f, be -> inFlight(be, "sparse_output_tokens: 0.5\n"),
                RecordedStepTest::batch, 0, after);
        assertTrue(rec.replays() >= 5, "replays: " + rec.replays());
        assertSame(eager, rec);
        assertEquals(evalSum[0], evalSum[1], "the evaluations between steps see the same adapters");
    }

    @Test
    void aPlanHeldFixedIsReplayedAndEqualsEager() {
        Function<Backend, SparsePlannerFactory> fixed = be -> {
            SparsePlanner[] hold = new SparsePlanner[1];
            return new SparsePlannerFactory() {
                @Override public org.sparselora.engine.sparse.StepPlanner make(RandomWeights src, LlamaModel model, LoraAdapter lora, int steps) {
                    hold[0] = SparsePlanner.create(be, src, TinyModels.sparsity("", "fixed"), null, steps, 5, SvdPredictor.Progress.NONE);
                    // choose once (a forward fills the plan's layers), then hand out that plan every step
                    SparsePlanner.Step st = hold[0].begin(batch(0), 0);
                    model.forward(batch(0), lora, st.plan(), st, 0);
                    model.backward();
                    lora.zeroGrads();
                    SparsePlan plan = st.plan();
                    return new org.sparselora.engine.sparse.StepPlanner() {
                        @Override public SparsePlan plan(Batch b, int step) { return plan; }
                    };
                }
                @Override public AutoCloseable closer() { return hold[0]; }
            };
        };
        Run eager = train(cpu, 5, 0f, fixed, RecordedStepTest::batch);
        Run rec = train(RecordingBackend.wrap(cpu, new RecordingBackend.Stats()), 5, 0f, fixed, RecordedStepTest::batch);
        assertEquals(3, rec.replays());
        assertSame(eager, rec);
    }

    @Test
    void aNewShapeInBetweenMakesTheRecordingStaleAndItIsMadeAgain() {
        // steps 0..2 and 5..7 share a shape; steps 3, 4 are longer: the activation buffers are remade twice
        Function<Integer, Batch> data = s -> s == 3 || s == 4 ? TinyModels.batch(C, 200 + s, 9, new int[] {0, 2}, 3) : batch(s);
        Run eager = train(cpu, 8, 0f, null, data);
        Run rec = train(RecordingBackend.wrap(cpu, new RecordingBackend.Stats()), 8, 0f, null, data);
        assertSame(eager, rec);
        assertEquals(3, rec.recordings(), "step 1, step 4 (the long shape's second step), step 5 (back to the first shape: its recording is stale)");
        assertEquals(3, rec.replays(), "steps 2, 6 and 7");
    }

    @Test
    void loraDropoutStepsAreNeverRecorded() {
        Run rec = train(RecordingBackend.wrap(cpu, new RecordingBackend.Stats()), 4, 0.1f, null, RecordedStepTest::batch);
        assertEquals(0, rec.recordings());
        assertEquals(0, rec.replays());
        Run eager = train(cpu, 4, 0.1f, null, RecordedStepTest::batch);
        assertSame(eager, rec);
    }
}
