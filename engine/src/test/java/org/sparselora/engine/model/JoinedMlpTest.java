package org.sparselora.engine.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.EnumSet;
import java.util.SplittableRandom;
import java.util.stream.IntStream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.SparsePlan.FrozenGrad;

/**
 * The full-width sparse MLP's joined path (LoRA on gate/up/down: LoRA written first, the token
 * groups' frozen outputs joined into it — LlamaModel.mlpForwardJoined / mlpBackwardJoined) against
 * the scatter-then-add path it replaces: same loss, evaluation loss and LoRA gradients up to float
 * rounding, for sliced and cut, token split on and off (every token sparse), LoRA on all seven and
 * on down only (gate/up written as 0 by the LoRA step). Token groups that are row blocks keep the
 * scatter-then-add path (checked in SparseExecutionTest.rowBlockGroupsEqualTheGatherPathBitForBit). Its finite-difference checks are
 * SparseExecutionTest's all-seven FD tests, which take this path (checked here). Also the three
 * Backend ops it adds, on the CPU, against plain loops.
 */
class JoinedMlpTest {
    static final CpuBackend be = new CpuBackend(2);
    static final SplittableRandom RNG = new SplittableRandom(17);

    @AfterAll
    static void close() { be.close(); }

    static float[] rand(int n) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) RNG.nextDouble(-2, 2);
        return a;
    }

    static Tensor t(float[] v, int... shape) { return be.fromFloats(v, DType.F32, shape); }

    static float silu(float g) { return g / (1f + (float) Math.exp(-g)); }

    @Test
    void scatterAddRowsColsAddsOnlyTheNamedElements() {
        int R = 5, C = 7;
        float[] o = rand(R * C), s = rand(2 * 3);
        int[] rows = {3, 0}, cols = {6, 1, 4};
        Tensor out = t(o, R, C);
        be.scatterAddRowsCols(out, t(s, 2, 3), TinyModels.ints(be, rows), TinyModels.ints(be, cols));
        float[] want = o.clone();
        for (int i = 0; i < 2; i++) for (int j = 0; j < 3; j++) want[rows[i] * C + cols[j]] += s[i * 3 + j];
        assertArrayEquals(want, be.toFloats(out), 1e-6f);
    }

    @Test
    void swigluJoinAndItsBackwardAgainstPlainLoops() {
        int R = 6, C = 5;
        int[] add = {4, 1}, plain = {0, 2, 5}, kept = {3, 0};    // row 3 is named by neither: left alone
        float[] g = rand(R * C), u = rand(R * C), ag = rand(2 * C), au = rand(2 * C), h0 = rand(R * C), kg = rand(3 * 2), ku = rand(3 * 2);
        Tensor G = t(g, R, C), U = t(u, R, C), H = t(h0, R, C), AG = t(ag, 2, C), AU = t(au, 2, C), HK = be.zeros(DType.F32, 3, 2);
        be.swigluJoin(H, G, U, AG, AU, TinyModels.ints(be, add), AG, TinyModels.ints(be, plain),      // hAdd in addG's place
                t(kg, 3, 2), t(ku, 3, 2), TinyModels.ints(be, kept), HK);
        float[] wg = g.clone(), wu = u.clone(), wh = h0.clone(), whAdd = new float[2 * C], whk = new float[3 * 2];
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < C; j++) {
                int e = add[i] * C + j;
                wg[e] += ag[i * C + j];
                wu[e] += au[i * C + j];
            }
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 2; j++) {
                wg[plain[i] * C + kept[j]] += kg[i * 2 + j];
                wu[plain[i] * C + kept[j]] += ku[i * 2 + j];
            }
        for (int r : new int[] {4, 1, 0, 2, 5}) for (int j = 0; j < C; j++) wh[r * C + j] = silu(wg[r * C + j]) * wu[r * C + j];
        for (int i = 0; i < 2; i++) System.arraycopy(wh, add[i] * C, whAdd, i * C, C);
        for (int i = 0; i < 3; i++) for (int j = 0; j < 2; j++) whk[i * 2 + j] = wh[plain[i] * C + kept[j]];
        assertArrayEquals(wg, be.toFloats(G), 1e-5f, "g with both groups added");
        assertArrayEquals(wu, be.toFloats(U), 1e-5f, "u with both groups added");
        assertArrayEquals(wh, be.toFloats(H), 1e-5f, "h");
        assertArrayEquals(whAdd, be.toFloats(AG), 1e-5f, "h's added rows gathered");
        assertArrayEquals(whk, be.toFloats(HK), 1e-5f, "h's kept channels of the plain rows gathered");

        float[] dh = rand(R * C), adh = rand(2 * C), kdh = rand(3 * 2), dg0 = rand(R * C), du0 = rand(R * C);
        Tensor DG = t(dg0, R, C), DU = t(du0, R, C), DGA = be.zeros(DType.F32, 2, C), DUA = be.zeros(DType.F32, 2, C);
        Tensor DGK = be.zeros(DType.F32, 3, 2), DUK = be.zeros(DType.F32, 3, 2), DH = t(dh, R, C);
        be.swigluBackwardJoin(DG, DU, DH, G, U, t(adh, 2, C), TinyModels.ints(be, add), DGA, DUA, TinyModels.ints(be, plain),
                t(kdh, 3, 2), TinyModels.ints(be, kept), DGK, DUK);
        assertArrayEquals(dh, be.toFloats(DH), "dh is only read");
        float[] d = dh.clone();
        for (int i = 0; i < 2; i++) for (int j = 0; j < C; j++) d[add[i] * C + j] += adh[i * C + j];
        for (int i = 0; i < 3; i++) for (int j = 0; j < 2; j++) d[plain[i] * C + kept[j]] += kdh[i * 2 + j];
        float[] wdg = dg0.clone(), wdu = du0.clone(), wdga = new float[2 * C], wdua = new float[2 * C], wdgk = new float[6], wduk = new float[6];
        for (int r : new int[] {4, 1, 0, 2, 5})
            for (int j = 0; j < C; j++) {
                int e = r * C + j;
                double gg = wg[e], uu = wu[e], sg = 1 / (1 + Math.exp(-gg));
                wdu[e] = (float) (d[e] * gg * sg);
                wdg[e] = (float) (d[e] * uu * sg * (1 + gg * (1 - sg)));
            }
        for (int i = 0; i < 2; i++) { System.arraycopy(wdg, add[i] * C, wdga, i * C, C); System.arraycopy(wdu, add[i] * C, wdua, i * C, C); }
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 2; j++) { wdgk[i * 2 + j] = wdg[plain[i] * C + kept[j]]; wduk[i * 2 + j] = wdu[plain[i] * C + kept[j]]; }
        assertArrayEquals(wdg, be.toFloats(DG), 1e-4f, "dg");
        assertArrayEquals(wdu, be.toFloats(DU), 1e-4f, "du");
        assertArrayEquals(wdga, be.toFloats(DGA), 1e-4f, "dg's added rows gathered");
        assertArrayEquals(wdua, be.toFloats(DUA), 1e-4f, "du's added rows gathered");
        assertArrayEquals(wdgk, be.toFloats(DGK), 1e-4f, "dg's kept channels gathered");
        assertArrayEquals(wduk, be.toFloats(DUK), 1e-4f, "du's kept channels gathered");
    }

    @Test
    void joinedPathEqualsScatterThenAdd() {
        LlamaConfig c = TinyModels.config(false, true, true);
        LlamaModel m = TinyModels.model(be, c, 21);
        m.setRowBlockMode(RowBlockMode.OFF);            // every token sparse is one run of rows: keep it gathered
        Batch b = TinyModels.batch(c, 22, 3);
        for (int variant = 0; variant < 3; variant++)
            for (FrozenGrad fg : new FrozenGrad[] {FrozenGrad.SLICED, FrozenGrad.CUT})
                for (boolean split : new boolean[] {true, false}) {
                    // all seven with gate/up's A fused, all seven per projection, down only
                    EnumSet<Projection> targets = variant == 2 ? EnumSet.of(Projection.Q, Projection.DOWN) : EnumSet.allOf(Projection.class);
                    LoraAdapter lora = TinyModels.adapter(be, c, 0f, 23, targets, variant != 1);
                    SparsePlan part = SparseExecutionTest.partial(c, b, fg);
                    SparsePlan plan = split ? part : new SparsePlan(TinyModels.ints(be, IntStream.range(0, b.tokenCount()).toArray()), null, part.layers(), fg);
                    String what = targets + (variant == 1 ? " unfused " : " ") + fg + " split=" + split;
                    TinyModels.StepRun[] runs = new TinyModels.StepRun[2];
                    int[] joined = new int[2];
                    for (int run = 0; run < 2; run++) {
                        m.mlpKinds = run == 0 ? EnumSet.allOf(Mlp.Kind.class) : EnumSet.of(Mlp.Kind.COMPACT, Mlp.Kind.PROJECTED);
                        TinyModels.StepRun s = TinyModels.trainStep(be, m, b, lora, plan, 5);
                        joined[run] = joinedLayers(m);          // set by the training forward (backward leaves it)
                        runs[run] = s.withEval(m.evaluate(b, lora, plan, false).lossSum());
                    }
                    m.mlpKinds = EnumSet.allOf(Mlp.Kind.class);
                    assertArrayEquals(new int[] {2, 0}, joined, "joined path on both layers, then off, " + what);
                    TinyModels.assertSameStep(runs[1], runs[0], lora.names(), 1e-5, what);
                    lora.close();
                }
    }

    @Test
    void theAllSevenFiniteDifferenceChecksTakeTheJoinedPath() {
        LlamaConfig c = TinyModels.config(false, true, true);
        LlamaModel m = TinyModels.model(be, c, 4);
        LoraAdapter lora = TinyModels.adapter(be, c, 0f, 5, EnumSet.allOf(Projection.class));
        Batch b = TinyModels.batch(c, 6, 2);
        m.forward(b, lora, SparseExecutionTest.partial(c, b, FrozenGrad.SLICED), 0);
        assertEquals(2, joinedLayers(m), "SparseExecutionTest.checkSlicedFd's setting must run the joined MLP");
        m.backward();
        LoraAdapter drop = TinyModels.adapter(be, c, 0.1f, 5, EnumSet.allOf(Projection.class));
        m.forward(b, drop, SparseExecutionTest.partial(c, b, FrozenGrad.SLICED), 0);
        assertEquals(0, joinedLayers(m), "LoRA dropout in training keeps the scatter-then-add path");
        m.backward();
    }

    /** Layers whose MLP took the joined path in the model's last forward. */
    private static int joinedLayers(LlamaModel m) {
        return (int) m.lastMlpKinds().stream().filter(k -> k == Mlp.Kind.JOINED).count();
    }
}
