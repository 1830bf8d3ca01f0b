package org.sparselora.engine.backend.cpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.sparselora.engine.backend.cpu.CpuBackendTest.rand;

import java.util.Random;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.ref.ReferenceBackend;

/**
 * The SparseLoRA ops that CpuBackend runs through the {@link Backend} defaults (compositions of
 * gathers, scatters and primitive ops through temporaries) against the reference backend's plain
 * loops: the joined SwiGLU pair of a token split, the scatter-add of a sparse group's outputs,
 * the padding-column fill, the low-rank channel scores, row-wise top-k and row-block GEMMs.
 */
class CpuFusedOpsTest {
    static final CpuBackend cpu = new CpuBackend(2);
    static final ReferenceBackend ref = new ReferenceBackend();

    @AfterAll
    static void close() { cpu.close(); }

    /** The same values on both backends: index 0 the CPU's tensor, 1 the reference's. */
    static Tensor[] both(float[] x, int... shape) {
        return new Tensor[] {cpu.fromFloats(x, DType.F32, shape), ref.fromFloats(x, DType.F32, shape)};
    }

    static Tensor[] ints(int[] x) {
        return new Tensor[] {cpu.fromInts(x, x.length), ref.fromInts(x, x.length)};
    }

    static Tensor at(Tensor[] pair, int b) { return pair == null ? null : pair[b]; }

    static void same(Tensor[] pair, double tol, String what) {
        float[] want = ref.toFloats(pair[1]), got = cpu.toFloats(pair[0]);
        assertEquals(want.length, got.length, what);
        for (int i = 0; i < want.length; i++) assertEquals(want[i], got[i], tol * (1 + Math.abs(want[i])), what + " at " + i);
    }

    static final int R = 10, C = 12;
    static final int[] ADD = {1, 4, 7}, PLAIN = {0, 2, 9}, KEPT = {3, 5, 11};

    @Test
    void swigluJoinMatchesTheReference() {
        for (int variant = 0; variant < 3; variant++) {
            Random r = new Random(50 + variant);
            boolean withAdd = variant != 2, withKept = variant != 1;
            Tensor[] h = both(rand(r, R * C, 1), R, C), g = both(rand(r, R * C, 1), R, C), u = both(rand(r, R * C, 1), R, C);
            Tensor[] addG = both(rand(r, ADD.length * C, 1), ADD.length, C), addU = both(rand(r, ADD.length * C, 1), ADD.length, C);
            Tensor[] hAdd = both(new float[ADD.length * C], ADD.length, C);
            Tensor[] keptG = both(rand(r, PLAIN.length * KEPT.length, 1), PLAIN.length, KEPT.length);
            Tensor[] keptU = both(rand(r, PLAIN.length * KEPT.length, 1), PLAIN.length, KEPT.length);
            Tensor[] hKept = both(new float[PLAIN.length * KEPT.length], PLAIN.length, KEPT.length);
            Tensor[] addRows = withAdd ? ints(ADD) : null, plainRows = ints(PLAIN), keptCols = withKept ? ints(KEPT) : null;
            for (int b = 0; b < 2; b++) {
                Backend be = b == 0 ? cpu : ref;
                be.sparse().swigluJoin(h[b], g[b], u[b], at(addG, b), at(addU, b), at(addRows, b), at(hAdd, b),
                        plainRows[b], at(keptG, b), at(keptU, b), at(keptCols, b), withKept ? hKept[b] : null);
            }
            String v = "variant " + variant;
            same(h, 1e-6, v + " h");
            same(g, 1e-6, v + " g");
            same(u, 1e-6, v + " u");
            same(hAdd, 1e-6, v + " hAdd");
            same(hKept, 1e-6, v + " hKept");
        }
    }

    @Test
    void swigluJoinMayWriteHAddOverAddG() {
        Random r = new Random(60);
        Tensor[] h = both(new float[R * C], R, C), g = both(rand(r, R * C, 1), R, C), u = both(rand(r, R * C, 1), R, C);
        Tensor[] addG = both(rand(r, ADD.length * C, 1), ADD.length, C), addU = both(rand(r, ADD.length * C, 1), ADD.length, C);
        Tensor[] addRows = ints(ADD);
        for (int b = 0; b < 2; b++)
            (b == 0 ? cpu : ref).swigluJoin(h[b], g[b], u[b], addG[b], addU[b], addRows[b], addG[b], null, null, null, null, null);
        same(addG, 1e-6, "hAdd written over addG");
        same(h, 1e-6, "h");
    }

    @Test
    void swigluBackwardJoinMatchesTheReference() {
        for (int variant = 0; variant < 2; variant++) {
            Random r = new Random(70 + variant);
            boolean withKeptDh = variant == 0;
            Tensor[] dg = both(new float[R * C], R, C), du = both(new float[R * C], R, C);
            Tensor[] dh = both(rand(r, R * C, 1), R, C), g = both(rand(r, R * C, 2), R, C), u = both(rand(r, R * C, 1), R, C);
            Tensor[] addDh = both(rand(r, ADD.length * C, 1), ADD.length, C);
            Tensor[] dgAdd = both(new float[ADD.length * C], ADD.length, C), duAdd = both(new float[ADD.length * C], ADD.length, C);
            Tensor[] keptDh = both(rand(r, PLAIN.length * KEPT.length, 1), PLAIN.length, KEPT.length);
            Tensor[] dgKept = both(new float[PLAIN.length * KEPT.length], PLAIN.length, KEPT.length);
            Tensor[] duKept = both(new float[PLAIN.length * KEPT.length], PLAIN.length, KEPT.length);
            Tensor[] addRows = ints(ADD), plainRows = ints(PLAIN), keptCols = ints(KEPT);
            for (int b = 0; b < 2; b++)
                (b == 0 ? cpu : ref).swigluBackwardJoin(dg[b], du[b], dh[b], g[b], u[b], addDh[b], addRows[b], dgAdd[b], duAdd[b],
                        plainRows[b], withKeptDh ? keptDh[b] : null, keptCols[b], dgKept[b], duKept[b]);
            String v = "variant " + variant;
            same(dg, 1e-6, v + " dg");
            same(du, 1e-6, v + " du");
            same(dgAdd, 1e-6, v + " dgAdd");
            same(duAdd, 1e-6, v + " duAdd");
            same(dgKept, 1e-6, v + " dgKept");
            same(duKept, 1e-6, v + " duKept");
            same(dh, 0, v + " dh is only read");
        }
    }

    @Test
    void scatterAddRowsColsAndFillColsMatchTheReference() {
        Random r = new Random(80);
        Tensor[] out = both(rand(r, R * C, 1), R, C), src = both(rand(r, PLAIN.length * KEPT.length, 1), PLAIN.length, KEPT.length);
        Tensor[] rows = ints(PLAIN), cols = ints(KEPT);
        for (int b = 0; b < 2; b++) (b == 0 ? cpu : ref).scatterAddRowsCols(out[b], src[b], rows[b], cols[b]);
        same(out, 1e-7, "scatterAddRowsCols");
        for (int col0 : new int[] {0, 7, C}) {
            Tensor[] t = both(rand(r, R * C, 1), R, C);
            for (int b = 0; b < 2; b++) (b == 0 ? cpu : ref).fillCols(t[b], col0, 0.25f);
            same(t, 0, "fillCols from " + col0);
        }
    }

    @Test
    void lowRankScoresMatchTheReference() {
        Random r = new Random(90);
        int n = 7, rank = 4, m1 = 20, m2 = 9;
        Tensor[] t1 = both(rand(r, n * rank, 1), n, rank), t2 = both(rand(r, n * rank, 1), n, rank);
        Tensor[] q1 = both(rand(r, rank * m1, 1), rank, m1), q2 = both(rand(r, rank * m2, 1), rank, m2);
        Tensor[] o1 = both(new float[m1], m1), o2 = both(new float[m2], m2);
        for (int b = 0; b < 2; b++)
            (b == 0 ? cpu : ref).lowRankColumnNorms(new Tensor[] {o1[b], o2[b]}, new Tensor[] {t1[b], t2[b]}, new Tensor[] {q1[b], q2[b]});
        same(o1, 1e-5, "lowRankColumnNorms 0");
        same(o2, 1e-5, "lowRankColumnNorms 1");
        Tensor[] qu = both(rand(r, rank * m1, 1), rank, m1), os = both(new float[m1], m1);
        for (int b = 0; b < 2; b++) (b == 0 ? cpu : ref).lowRankSwigluColumnNorms(os[b], t1[b], q1[b], t2[b], qu[b]);
        same(os, 1e-5, "lowRankSwigluColumnNorms");
    }

    @Test
    void topKRowsAndMatmulRowBlocksMatchTheReference() {
        Random r = new Random(100);
        int m = 3, n = 40, k = 11;
        float[] s = rand(r, m * n, 1);
        s[5] = s[17]; // a tie in row 0
        Tensor[] scores = both(s, m, n);
        Tensor ci = cpu.empty(DType.I32, m, k), ri = ref.empty(DType.I32, m, k);
        cpu.topKRows(ci, scores[0], k);
        ref.topKRows(ri, scores[1], k);
        assertArrayEquals(ref.toInts(ri), cpu.toInts(ci), "topKRows");

        int blocks = 3, rows = 4, kk = 6, nn = 5;
        Tensor[] a = both(rand(r, 14 * kk, 1), 14, kk), w = both(rand(r, nn * kk, 1), nn, kk), c = both(rand(r, 16 * nn, 1), 16, nn);
        for (int b = 0; b < 2; b++) (b == 0 ? cpu : ref).matmulRowBlocks(c[b], 1, 5, a[b], 2, 4, w[b], true, blocks, rows, 0.5f, 1f);
        same(c, 1e-5, "matmulRowBlocks");
    }
}
