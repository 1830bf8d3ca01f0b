package org.sparselora.engine.sparse;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.train.InProcessScoreExchange;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.ref.ReferenceBackend;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.StepResult;
import org.sparselora.engine.train.TrainerState;
import org.sparselora.engine.train.TrainingWorker;
import org.sparselora.engine.model.SparsePlan;

/**
 * One channel selection per step across data-parallel workers: N planners, each over its own rows
 * of a batch and joined by an {@link InProcessScoreExchange}, select exactly what one planner over
 * the whole batch selects; and the exchange itself (worker-order sums, abstaining workers, time-out,
 * release of waiting workers on a restart).
 */
class GlobalSelectionTest {

    final Backend be = new ReferenceBackend();
    final ExecutorService pool = Executors.newCachedThreadPool();

    @AfterEach
    void stopPool() { pool.shutdownNow(); }

    /** GQA: 4 query heads over 2 KV heads, head dim 8, three layers. */
    static final LlamaConfig CFG = TestWeights.config(32, 64, 3, 4, 2);

    /** seq b: pad[b] padding rows, prompt[b] context rows, then output rows. */
    static Batch batch(int seqLen, int[] pad, int[] prompt, int from, int to) {
        Batch whole = TokenSplitAndPlannerTest.batch(seqLen, pad, prompt);
        int n = (to - from) * seqLen;
        return new Batch(to - from, seqLen,
                Arrays.copyOfRange(whole.tokens(), from * seqLen, from * seqLen + n),
                Arrays.copyOfRange(whole.targets(), from * seqLen, from * seqLen + n),
                Arrays.copyOfRange(whole.positions(), from * seqLen, from * seqLen + n),
                Arrays.copyOfRange(whole.keyStart(), from, to));
    }

    /** Every layer's kept channels, as the model would ask for them: [layer][mlp, q, k, v, o]. */
    int[][][] select(SparsePlanner planner, Batch b, int step, float[][] attnIn, float[][] mlpIn, int row0) {
        int c = CFG.hiddenSize(), n = b.tokenCount();
        int[][][] out = new int[CFG.numLayers()][][];
        try (SparsePlanner.Step s = planner.begin(b, step)) {
            assertTrue(s.sparse());
            for (int l = 0; l < CFG.numLayers(); l++) {
                try (Tensor xa = be.fromFloats(Arrays.copyOfRange(attnIn[l], row0 * c, (row0 + n) * c), DType.F32, n, c);
                     Tensor xm = be.fromFloats(Arrays.copyOfRange(mlpIn[l], row0 * c, (row0 + n) * c), DType.F32, n, c)) {
                    s.attention(l, xa);
                    SparsePlan.LayerPlan p = s.mlp(l, xm);
                    out[l] = p == null ? new int[5][] : new int[][] {ints(p.mlp()), ints(p.q()), ints(p.k()), ints(p.v()), ints(p.o())};
                }
            }
        }
        return out;
    }

    int[] ints(Tensor t) { return t == null ? null : be.toInts(t); }

    static float[][] randomInputs(int layers, int rows, int c, Random rng) {
        float[][] x = new float[layers][rows * c];
        for (float[] a : x) for (int i = 0; i < a.length; i++) a[i] = (float) rng.nextGaussian();
        return x;
    }

    @Test
    void twoPlannersOverHalvesSelectWhatOnePlannerOverTheWholeBatchSelects() throws Exception {
        TestWeights w = new TestWeights(CFG, DType.F32, 5);
        SparsityConfig config = SparsityConfig.parse("""
                start_step: 0
                sparsity:
                  layers.0.mlp: 0.5
                  layers.0.self_attn: 0.5
                  layers.1.mlp: 0.75
                  layers.1.self_attn: 0.25
                  layers.2.mlp: 0.25
                  layers.2.self_attn: 0.5
                """, "t");
        SparsityConfig.Resolved r = config.resolve(CFG);
        SvdPredictor pred = SvdPredictor.forConfig(w, r, 4, null, LowRankSvd.Method.EXACT, SvdPredictor.Progress.NONE);
        int seqLen = 10;
        int[] pad = {3, 0, 6, 1}, prompt = {2, 4, 1, 3};        // left padding in both halves
        Batch whole = batch(seqLen, pad, prompt, 0, 4);
        int differing = 0;
        for (int step = 0; step < 3; step++) {
            Random rng = new Random(100 + step);
            float[][] xa = randomInputs(3, whole.tokenCount(), 32, rng), xm = randomInputs(3, whole.tokenCount(), 32, rng);
            int[][][] one;
            try (ChannelSelection sel = new ChannelSelection(be, pred, r)) {
                one = select(new SparsePlanner(be, config, sel, 10, 7), whole, step, xa, xm, 0);
            }
            InProcessScoreExchange ex = new InProcessScoreExchange(2, Duration.ofSeconds(30));
            List<Future<int[][][]>> parts = new ArrayList<>();
            for (int wk = 0; wk < 2; wk++) {
                int worker = wk, s = step;
                parts.add(pool.submit(() -> {
                    try (ChannelSelection sel = new ChannelSelection(be, pred, r)) {
                        SparsePlanner p = new SparsePlanner(be, config, sel, 10, 7).withExchange(ex.worker(worker));
                        return select(p, batch(seqLen, pad, prompt, 2 * worker, 2 * worker + 2), s, xa, xm, 2 * worker * seqLen);
                    }
                }));
            }
            int[][][] w0 = parts.get(0).get(20, TimeUnit.SECONDS), w1 = parts.get(1).get(20, TimeUnit.SECONDS);
            for (int l = 0; l < 3; l++)
                for (int k = 0; k < 5; k++) {
                    String what = "step " + step + " layer " + l + " " + List.of("mlp", "q", "k", "v", "o").get(k);
                    assertArrayEquals(one[l][k], w0[l][k], what + ": worker 0 vs one worker");
                    assertArrayEquals(one[l][k], w1[l][k], what + ": worker 1 vs one worker");
                }
            // the same halves without the exchange choose differently: the test can tell the two apart
            try (ChannelSelection sel = new ChannelSelection(be, pred, r)) {
                int[][][] local = select(new SparsePlanner(be, config, sel, 10, 7), batch(seqLen, pad, prompt, 0, 2), step, xa, xm, 0);
                for (int l = 0; l < 3; l++) for (int k = 0; k < 5; k++) if (!Arrays.equals(one[l][k], local[l][k])) differing++;
            }
        }
        assertTrue(differing > 0, "per-worker selection never differed from the global one");
    }

    @Test
    void sumsInWorkerOrderAndHandsEveryoneTheSameArray() throws Exception {
        int n = 3;
        InProcessScoreExchange ex = new InProcessScoreExchange(n, Duration.ofSeconds(30));
        float[][] local = {{1e8f, 1f, 2f}, {-1e8f, 3f, 4f}, {1f, 5f, 6f}};
        float[] expected = new float[3];
        for (int i = 0; i < 3; i++) expected[i] = (local[0][i] + local[1][i]) + local[2][i];   // worker order
        List<Future<float[]>> got = new ArrayList<>();
        for (int w = n - 1; w >= 0; w--) {     // arrive in reverse order
            ScoreExchange v = ex.worker(w);
            int wk = w;
            got.add(pool.submit(() -> {
                v.beginStep(0, true);
                Thread.sleep(20L * (n - wk));
                return v.allReduceSum(1, "mlp", local[wk].clone());
            }));
        }
        float[] first = got.get(0).get(10, TimeUnit.SECONDS);
        assertArrayEquals(expected, first);
        for (Future<float[]> f : got) assertSame(first, f.get(10, TimeUnit.SECONDS));
        assertEquals(1f, first[0], "1e8 - 1e8 first, then + 1: the worker order, not the arrival order");
        assertEquals(1, ScoreExchange.SINGLE.workers());
        float[] x = {1, 2};
        assertSame(x, ScoreExchange.SINGLE.allReduceSum(0, "mlp", x));
    }

    @Test
    void aWorkerThatNeverArrivesTimesOutNamingIt() {
        InProcessScoreExchange ex = new InProcessScoreExchange(3, Duration.ofMillis(200));
        ScoreExchange w0 = ex.worker(0), w2 = ex.worker(2);
        w2.beginStep(4, true);
        Future<float[]> f = pool.submit(() -> w2.allReduceSum(2, "qkv", new float[] {1}));
        w0.beginStep(4, true);
        long t0 = System.nanoTime();
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> w0.allReduceSum(2, "qkv", new float[] {2}));
        assertTrue(System.nanoTime() - t0 < 5_000_000_000L);
        assertTrue(e.getMessage().contains("step 5, layer 2 (qkv)") && e.getMessage().contains("worker(s) [1]"), e.getMessage());
        assertThrows(Exception.class, () -> f.get(5, TimeUnit.SECONDS));
    }

    @Test
    void aReplacedWorkerReleasesTheOthersAndTheNextStepIsGlobalAgain() throws Exception {
        InProcessScoreExchange ex = new InProcessScoreExchange(2, Duration.ofMinutes(5));
        ex.workerStarting(0);
        ex.workerStarting(1);
        ScoreExchange w0 = ex.worker(0), w1 = ex.worker(1);
        w0.beginStep(7, true);
        Future<float[]> waiting = pool.submit(() -> w0.allReduceSum(0, "mlp", new float[] {4f}));
        Thread.sleep(100);
        assertFalse(waiting.isDone(), "worker 0 waits for worker 1");
        // worker 1 fails mid-step; the job's restart creates its replacement
        long epoch = ex.epoch();
        ex.workerStarting(1);
        assertEquals(epoch + 1, ex.epoch());
        assertArrayEquals(new float[] {4f}, waiting.get(5, TimeUnit.SECONDS), "released with its own sums");
        // the rest of the abandoned step does not block either
        assertArrayEquals(new float[] {9f}, w0.allReduceSum(1, "mlp", new float[] {9f}));
        // nor does one more step of the abandoned generation that worker 0 starts before its restore
        w0.beginStep(8, true);
        assertArrayEquals(new float[] {5f}, w0.allReduceSum(0, "mlp", new float[] {5f}));
        // after the restore both workers are in the new epoch and sum again
        ex.rejoin(0);
        ScoreExchange w1b = ex.worker(1);
        Future<float[]> a = pool.submit(() -> { w0.beginStep(5, true); return w0.allReduceSum(0, "mlp", new float[] {1f}); });
        Future<float[]> b = pool.submit(() -> { w1b.beginStep(5, true); return w1b.allReduceSum(0, "mlp", new float[] {2f}); });
        assertArrayEquals(new float[] {3f}, a.get(5, TimeUnit.SECONDS));
        assertArrayEquals(new float[] {3f}, b.get(5, TimeUnit.SECONDS));
    }

    @Test
    void restoringAMemberRejoinsTheExchange() throws Exception {
        InProcessScoreExchange ex = new InProcessScoreExchange(2, Duration.ofMinutes(5));
        TrainerState[] restored = new TrainerState[1];
        TrainingWorker inner = new TrainingWorker() {
            @Override public StepResult computeGradients(Batch batch, int step, boolean sparse) { throw new UnsupportedOperationException(); }
            @Override public float[][] gradientsToHost() { return new float[][] {{7f}}; }
            @Override public void gradientsFromHost(float[][] grads) {}
            @Override public float applyUpdate(int step, long tokens) { return 0.5f; }
            @Override public TrainerState state() { return restored[0]; }
            @Override public void restore(TrainerState state) { restored[0] = state; }
        };
        InProcessScoreExchange.Member m = ex.member(0, inner);
        assertSame(inner, m.inner());
        assertEquals(0.5f, m.applyUpdate(0, 1));
        ex.workerStarting(0);
        ex.workerStarting(1);
        ex.workerStarting(1);                       // worker 1 replaced: worker 0 has not rejoined yet
        ScoreExchange s0 = m.scores(), s1 = ex.worker(1);
        s0.beginStep(3, true);
        assertArrayEquals(new float[] {1f}, s0.allReduceSum(0, "mlp", new float[] {1f}), "stale: its own sums, at once");
        TrainerState st = new TrainerState(3, new java.util.LinkedHashMap<>());
        m.restore(st);
        assertSame(st, restored[0]);
        Future<float[]> a = pool.submit(() -> { s0.beginStep(3, true); return s0.allReduceSum(0, "mlp", new float[] {1f}); });
        Future<float[]> b = pool.submit(() -> { s1.beginStep(3, true); return s1.allReduceSum(0, "mlp", new float[] {2f}); });
        assertArrayEquals(new float[] {3f}, a.get(5, TimeUnit.SECONDS));
        assertArrayEquals(new float[] {3f}, b.get(5, TimeUnit.SECONDS));
    }

    @Test
    void aWorkerWithoutSparseTokensIsNotWaitedFor() throws Exception {
        TestWeights w = new TestWeights(CFG, DType.F32, 8);
        SparsityConfig config = SparsityConfig.parse("start_step: 0\nsparsity:\n  layers.1.mlp: 0.5\n  layers.1.self_attn: 0.5\n", "t");
        SparsityConfig.Resolved r = config.resolve(CFG);
        SvdPredictor pred = SvdPredictor.forConfig(w, r, 4, null, LowRankSvd.Method.EXACT, SvdPredictor.Progress.NONE);
        InProcessScoreExchange ex = new InProcessScoreExchange(2, Duration.ofSeconds(30));
        int seqLen = 6;
        // worker 1's rows have no context token: with output tokens dense its whole shard runs dense
        Batch b0 = batch(seqLen, new int[] {1, 0}, new int[] {2, 2}, 0, 2), b1 = batch(seqLen, new int[] {0, 0}, new int[] {0, 0}, 0, 2);
        Random rng = new Random(3);
        float[][] x = randomInputs(3, 2 * seqLen, 32, rng);
        Callable<Boolean> dense = () -> {
            try (ChannelSelection sel = new ChannelSelection(be, pred, r);
                 SparsePlanner.Step s = new SparsePlanner(be, config, sel, 10, 1).withExchange(ex.worker(1)).begin(b1, 0)) {
                return s.sparse();
            }
        };
        assertFalse(pool.submit(dense).get(10, TimeUnit.SECONDS));
        Callable<int[][][]> sparse = () -> {
            try (ChannelSelection sel = new ChannelSelection(be, pred, r)) {
                return select(new SparsePlanner(be, config, sel, 10, 1).withExchange(ex.worker(0)), b0, 0, x, x, 0);
            }
        };
        int[][][] got = pool.submit(sparse).get(10, TimeUnit.SECONDS);
        try (ChannelSelection sel = new ChannelSelection(be, pred, r)) {
            int[][][] alone = select(new SparsePlanner(be, config, sel, 10, 1), b0, 0, x, x, 0);
            assertArrayEquals(alone[1][0], got[1][0]);
            assertArrayEquals(alone[1][2], got[1][2]);
        }
    }
}
