package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;

/**
 * GpuBackend's SparseLoRA data movement against CpuBackend: row and column gathers and scatters,
 * index padding, the joined SwiGLU, column norms, sequence means and padding masks.
 * See {@link GpuOpsTestSupport} for the method and tolerances.
 */
@Tag("gpu")
class GpuSparseTest extends GpuOpsTestSupport {
    @Test
    void gatherScatterRowsAndCols() {
        int R = 50, C = 64, k = 17;
        int[] idx = distinct(k, R), cidx = distinct(k, C);
        for (DType t : FLOATS) {
            Pair S = pair(rand(R * C, 1f), t, R, C), I = ints(idx, k), CI = ints(cidx, k);
            Pair O = out(t, k, C);
            gpu.gatherRows(O.g, S.g, I.g);
            cpu.gatherRows(O.c, S.c, I.c);
            exact("gatherRows " + t, O);
            float[] base = rand(R * C, 1f);
            for (boolean acc : new boolean[] {false, true}) {
                Pair D = inout(base, t, R, C);
                gpu.scatterRows(D.g, O.g, I.g, acc);
                cpu.scatterRows(D.c, O.c, I.c, acc);
                close("scatterRows acc=" + acc + " " + t, D, t == DType.BF16 ? BF16_TOL : 0);
            }
            Pair OC = out(t, R, k);
            gpu.gatherCols(OC.g, S.g, CI.g);
            cpu.gatherCols(OC.c, S.c, CI.c);
            exact("gatherCols " + t, OC);
            for (boolean acc : new boolean[] {false, true}) {
                Pair D = inout(base, t, R, C);
                gpu.scatterCols(D.g, OC.g, CI.g, acc);
                cpu.scatterCols(D.c, OC.c, CI.c, acc);
                close("scatterCols acc=" + acc + " " + t, D, t == DType.BF16 ? BF16_TOL : 0);
            }
        }
    }

    /**
     * Whole-row gathers and scatters (and column ones over many rows) at the sizes the kernels branch on: the vectorized grid-stride
     * path with a partial last pass, several passes (k·C/8 above the grid's 2112·256·4 units per pass),
     * the token split of the 8B timing shape's context rows (3072 of 4096 rows × 4096), and the scalar
     * per-row path (C not a multiple of 8, and a source 1 element off alignment). Exact.
     */
    @Test
    void gatherScatterRowsVectorizedAndScalarPaths() {
        int[][] cases = {{300, 64, 123}, {4096, 4096, 3072}, {2300, 8000, 2200}, {40, 70, 13}};
        for (int[] cs : cases) {
            int R = cs[0], C = cs[1], k = cs[2];
            int[] idx = shuffled(distinct(k, R));
            for (DType t : FLOATS) {
                if (t == DType.F32 && (long) R * C > 4_000_000) continue;   // the large shapes in bf16 only (the GPU's storage type)
                String what = t + " R=" + R + " C=" + C + " k=" + k;
                Pair S = pair(rand(R * C, 1f), t, R, C), I = ints(idx, k), O = out(t, k, C);
                gpu.gatherRows(O.g, S.g, I.g);
                cpu.gatherRows(O.c, S.c, I.c);
                exact("gatherRows " + what, O);
                float[] base = rand(R * C, 1f);
                for (boolean acc : new boolean[] {false, true}) {
                    Pair D = inout(base, t, R, C);
                    gpu.scatterRows(D.g, O.g, I.g, acc);
                    cpu.scatterRows(D.c, O.c, I.c, acc);
                    close("scatterRows acc=" + acc + " " + what, D, t == DType.BF16 && acc ? BF16_TOL : 0);
                }
            }
        }
        // column gathers/scatters with more rows than blocks (blocks stride over rows), bf16, exact
        {
            int R = 5000, C = 300, k = 37;
            int[] cidx = shuffled(distinct(k, C));
            Pair S = pair(rand(R * C, 1f), DType.BF16, R, C), CI = ints(cidx, k), O = out(DType.BF16, R, k);
            gpu.gatherCols(O.g, S.g, CI.g);
            cpu.gatherCols(O.c, S.c, CI.c);
            exact("gatherCols R=5000", O);
            Pair D = inout(rand(R * C, 1f), DType.BF16, R, C);
            gpu.scatterCols(D.g, O.g, CI.g, false);
            cpu.scatterCols(D.c, O.c, CI.c, false);
            exact("scatterCols R=5000", D);
        }
        // a source view 1 element off 16-byte alignment: the scalar path
        int R = 20, C = 64, k = 7;
        float[] src = rand(R * C + 1, 1f);
        Tensor big = gpu.fromFloats(bf(src), DType.BF16, R * C + 1);
        Tensor cs = cpu.fromFloats(Arrays.copyOfRange(bf(src), 1, R * C + 1), DType.F32, R, C);
        int[] idx = shuffled(distinct(k, R));
        Pair I = ints(idx, k), O = out(DType.BF16, k, C);
        gpu.gatherRows(O.g, big.view(1, R, C), I.g);
        cpu.gatherRows(O.c, cs, I.c);
        exact("gatherRows unaligned source", O);
        big.close();
    }

    /** A duplicate-free random index set in random order (the fused row/column ops must not rely on ascending sets). */
    static int[] shuffled(int[] a) {
        int[] r = a.clone();
        for (int i = r.length - 1; i > 0; i--) { int j = RNG.nextInt(i + 1); int s = r[i]; r[i] = r[j]; r[j] = s; }
        return r;
    }

    /**
     * padIndexSet and fillCols (the sparse MLP's kept-channel padding) against CpuBackend, exact: the
     * 8B shape (143 of 14336 kept), a set holding the lowest channels (the pads come after it), a range
     * not a multiple of 32, shuffled sets, no padding; fillCols on a NaN-poisoned slice leaves the
     * kept columns and writes the padding ones, bf16 and f32, including a 1-element-off view.
     */
    @Test
    void padIndexSetAndFillCols() {
        int[][] cases = {{14336, 143, 144}, {14336, 143, 150}, {100, 30, 37}, {70, 65, 70}, {64, 8, 8}, {33, 32, 33}};
        for (int[] cs : cases) {
            int n = cs[0], k = cs[1], kp = cs[2];
            for (int variant = 0; variant < 3; variant++) {
                int[] kept = variant == 0 ? distinct(k, n) : variant == 1 ? java.util.stream.IntStream.range(0, k).toArray() : shuffled(distinct(k, n));
                Pair I = ints(kept, k);
                Tensor og = gpu.empty(DType.I32, kp), oc = cpu.empty(DType.I32, kp);
                gpu.fill(og, -7f);
                gpu.padIndexSet(og, I.g, n);
                cpu.padIndexSet(oc, I.c, n);
                int[] want = cpu.toInts(oc), got = gpu.toInts(og);
                assertArrayEquals(want, got, "padIndexSet n=" + n + " k=" + k + " kp=" + kp + " variant " + variant);
                java.util.Set<Integer> seen = new java.util.HashSet<>();
                for (int v : got) assertTrue(v >= 0 && v < n && seen.add(v), "padIndexSet must give distinct indices in range: " + Arrays.toString(got));
                og.close();
                oc.close();
            }
        }
        for (DType t : FLOATS)
            for (int[] rc : new int[][] {{4096, 144, 143}, {7, 13, 5}, {3, 16, 16}, {5, 9, 0}}) {
                int R = rc[0], C = rc[1], c0 = rc[2];
                float[] v = rand(R * C, 1f);
                Pair T = inout(v, t, R, C);
                gpu.fillCols(T.g, c0, 0f);
                cpu.fillCols(T.c, c0, 0f);
                exact("fillCols " + t + " " + R + "x" + C + " from " + c0, T);
                Tensor big = gpu.empty(t, R * C + 1);
                gpu.fill(big, Float.NaN);
                Tensor V = big.view(1, R, C);
                gpu.copyFromHost(V, t == DType.BF16 ? bf(v) : v);
                gpu.fillCols(V, c0, 0f);
                exact("fillCols unaligned " + t + " " + R + "x" + C, new Pair(V, T.c));
                big.close();
            }
    }

    /** Poisons the named rows of a GPU tensor (R,C) with NaN (an element a kernel leaves unwritten then fails). */
    static void poisonRows(Tensor t, Tensor rows, int C) {
        if (rows == null || rows.numel() == 0) return;
        Tensor nan = gpu.empty(t.dtype(), (int) rows.numel(), C);
        gpu.fill(nan, Float.NaN);
        gpu.scatterRows(t, nan, rows, false);
        nan.close();
    }

    /**
     * The full-width sparse MLP's joined kernels against CpuBackend (the Backend defaults):
     * swigluJoin (hAdd in addG's place, the plain rows' kept columns added and gathered) and
     * swigluBackwardJoin (kept dh added and dg/du gathered; gathered only; neither) — 8-wide rows
     * (C % 8 == 0, rows of the 8B width with 144 kept) and the scalar path (odd C, a 1-element-off h),
     * no add rows, no plain rows, no kept columns, a row named by neither set (left alone); named rows
     * and gathered outputs NaN-poisoned first. Then scatterAddRowsCols (exact in f32).
     */
    @Test
    void joinedSwigluAndScatterAddRowsCols() {
        int[][] cases = { // R, C, nAdd, nPlain, k
                {64, 96, 16, 48, 13}, {37, 13, 9, 20, 4}, {32, 14336, 8, 24, 144}, {20, 40, 0, 20, 8}, {12, 24, 12, 0, 0}, {16, 32, 4, 12, 0}};
        for (int[] cs : cases) {
            int R = cs[0], C = cs[1], na = cs[2], np = cs[3], k = cs[4];
            int[] perm = shuffled(java.util.stream.IntStream.range(0, R).toArray());
            int[] add = Arrays.copyOf(perm, na), plain = Arrays.copyOfRange(perm, na, na + np);
            Pair AR = na == 0 ? null : ints(add, na), PR = np == 0 ? null : ints(plain, np), KC = k == 0 ? null : ints(shuffled(distinct(k, C)), k);
            int na1 = Math.max(1, na), np1 = Math.max(1, np), k1 = Math.max(1, k);
            for (DType t : FLOATS)
                for (int variant = 0; variant < 3; variant++) {
                    if (variant > 0 && (C % 8 != 0 || k == 0)) continue;
                    // variant 0: h aligned, backward adds and gathers kept; 1: h one element off (scalar
                    // path), backward only gathers kept; 2: backward neither adds nor gathers kept
                    String what = t + " R=" + R + " C=" + C + " add=" + na + " plain=" + np + " k=" + k + " variant " + variant;
                    Pair G = inout(rand(R * C, 2f), t, R, C), U = inout(rand(R * C, 2f), t, R, C), H = inout(rand(R * C, 1f), t, R, C);
                    Pair AG = pair(rand(na1 * C, 1f), t, na1, C), AU = pair(rand(na1 * C, 1f), t, na1, C);
                    Pair KG = pair(rand(np1 * k1, 1f), t, np1, k1), KU = pair(rand(np1 * k1, 1f), t, np1, k1), HK = out(t, np1, k1);
                    Tensor hg = H.g, big = null;
                    if (variant == 1) {
                        big = gpu.empty(t, R * C + 1);
                        hg = big.view(1, R, C);
                        gpu.copy(hg, H.g);
                    }
                    poisonRows(hg, AR == null ? null : AR.g, C);
                    poisonRows(hg, PR == null ? null : PR.g, C);
                    gpu.swigluJoin(hg, G.g, U.g, AG.g, AU.g, AR == null ? null : AR.g, AG.g, PR == null ? null : PR.g,
                            KG.g, KU.g, KC == null ? null : KC.g, HK.g);
                    cpu.swigluJoin(H.c, G.c, U.c, AG.c, AU.c, AR == null ? null : AR.c, AG.c, PR == null ? null : PR.c,
                            KG.c, KU.c, KC == null ? null : KC.c, HK.c);
                    close("swigluJoin h " + what, new Pair(hg, H.c), tolFor(t));
                    close("swigluJoin g " + what, G, tolFor(t));
                    close("swigluJoin u " + what, U, tolFor(t));
                    if (na > 0) close("swigluJoin hAdd " + what, AG, tolFor(t));
                    if (np > 0 && k > 0) close("swigluJoin hKept " + what, HK, tolFor(t));
                    if (big != null) big.close();
                    // backward over the joined g, u
                    Pair DH = pair(rand(R * C, 1f), t, R, C), AD = pair(rand(na1 * C, 1f), t, na1, C), KD = pair(rand(np1 * k1, 1f), t, np1, k1);
                    Pair DG = inout(rand(R * C, 1f), t, R, C), DU = inout(rand(R * C, 1f), t, R, C);
                    Pair DGA = out(t, na1, C), DUA = out(t, na1, C), DGK = out(t, np1, k1), DUK = out(t, np1, k1);
                    for (Pair p : new Pair[] {DG, DU}) {
                        poisonRows(p.g, AR == null ? null : AR.g, C);
                        poisonRows(p.g, PR == null ? null : PR.g, C);
                    }
                    boolean addKept = variant == 0, gatherKept = variant < 2;
                    gpu.swigluBackwardJoin(DG.g, DU.g, DH.g, G.g, U.g, AD.g, AR == null ? null : AR.g, DGA.g, DUA.g, PR == null ? null : PR.g,
                            addKept ? KD.g : null, KC == null ? null : KC.g, gatherKept ? DGK.g : null, gatherKept ? DUK.g : null);
                    cpu.swigluBackwardJoin(DG.c, DU.c, DH.c, G.c, U.c, AD.c, AR == null ? null : AR.c, DGA.c, DUA.c, PR == null ? null : PR.c,
                            addKept ? KD.c : null, KC == null ? null : KC.c, gatherKept ? DGK.c : null, gatherKept ? DUK.c : null);
                    close("swigluBackwardJoin dg " + what, DG, tolFor(t));
                    close("swigluBackwardJoin du " + what, DU, tolFor(t));
                    if (na > 0) {
                        close("swigluBackwardJoin dgAdd " + what, DGA, tolFor(t));
                        close("swigluBackwardJoin duAdd " + what, DUA, tolFor(t));
                    }
                    if (np > 0 && k > 0 && gatherKept) {
                        close("swigluBackwardJoin dgKept " + what, DGK, tolFor(t));
                        close("swigluBackwardJoin duKept " + what, DUK, tolFor(t));
                    }
                }
        }
        for (int[] cs : new int[][] {{50, 64, 17, 16}, {3072 / 8, 14336, 384, 144}, {9, 13, 4, 5}}) {
            int R = cs[0], C = cs[1], n = cs[2], k = cs[3];
            for (boolean shuffle : new boolean[] {false, true}) {
                Pair[] ix = rowColIndexSets(R, C, n, k, shuffle);
                Pair RI = ix[0], CI = ix[1];
                for (DType t : FLOATS) {
                    Pair O = inout(rand(R * C, 1f), t, R, C), S = pair(rand(n * k, 1f), t, n, k);
                    gpu.scatterAddRowsCols(O.g, S.g, RI.g, CI.g);
                    cpu.scatterAddRowsCols(O.c, S.c, RI.c, CI.c);
                    String what = "scatterAddRowsCols " + t + " R=" + R + " C=" + C + " n=" + n + " k=" + k + (shuffle ? " shuffled" : "");
                    if (t == DType.F32) exact(what, O); else close(what, O, BF16_TOL);
                }
            }
        }
    }

    /** n distinct rows of R and k distinct columns of C as I32 pairs {rows, cols}: ascending, or shuffled. */
    private static Pair[] rowColIndexSets(int R, int C, int n, int k, boolean shuffle) {
        int[] rows = distinct(n, R), cols = distinct(k, C);
        if (shuffle) { rows = shuffled(rows); cols = shuffled(cols); }
        return new Pair[] {ints(rows, n), ints(cols, k)};
    }

    /**
     * The fused block ops (one kernel each) against CpuBackend, exact: every shape class the kernels
     * branch on — 8-wide and scalar column paths (k or C not a multiple of 8, and an output that is a
     * view 1 element off 16-byte alignment), the shared-memory column map and the wide-row fallback
     * (C over {@link GpuSparse#SCATTER_MAP_MAX_COLS}), one row/one column, every row and every column,
     * ascending and shuffled index sets, many rows per block (n over the block count).
     */
    @Test
    void gatherRowsColsAndScatterRowsColsFused() {
        int[][] cases = { // R, C, n, k
                {50, 64, 17, 16}, {37, 70, 10, 13}, {40, 64, 40, 64}, {9, 8, 1, 1}, {33, 24, 33, 1},
                {3000, 512, 2300, 104}, {5, GpuSparse.SCATTER_MAP_MAX_COLS + 40, 3, 200}, {12, 1029, 7, 1029}};
        for (int[] cs : cases) {
            int R = cs[0], C = cs[1], n = cs[2], k = cs[3];
            for (boolean shuffle : new boolean[] {false, true}) {
                Pair[] ix = rowColIndexSets(R, C, n, k, shuffle);
                Pair RI = ix[0], CI = ix[1];
                for (DType t : FLOATS) {
                    String what = t + " R=" + R + " C=" + C + " n=" + n + " k=" + k + (shuffle ? " shuffled" : "");
                    Pair S = pair(rand(R * C, 1f), t, R, C);
                    // gather into an aligned output and into one 1 element off 16-byte alignment (scalar path)
                    Pair G = out(t, n, k);
                    gpu.gatherRowsCols(G.g, S.g, RI.g, CI.g);
                    cpu.gatherRowsCols(G.c, S.c, RI.c, CI.c);
                    exact("gatherRowsCols " + what, G);
                    Tensor big = gpu.empty(t, n * k + 1);
                    gpu.fill(big, Float.NaN);
                    Pair G1 = new Pair(big.view(1, n, k), cpu.zeros(DType.F32, n, k));
                    gpu.gatherRowsCols(G1.g, S.g, RI.g, CI.g);
                    cpu.gatherRowsCols(G1.c, S.c, RI.c, CI.c);
                    exact("gatherRowsCols unaligned " + what, G1);
                    big.close();
                    // scatter: named rows become the values at their columns and 0 elsewhere (NaN-poisoned
                    // first, so an element left unwritten fails); other rows keep their values
                    Pair src = pair(rand(n * k, 1f), t, n, k);
                    float[] base = rand(R * C, 1f);
                    Pair D = inout(base, t, R, C);
                    Tensor poison = gpu.empty(t, n, C);
                    gpu.fill(poison, Float.NaN);
                    gpu.scatterRows(D.g, poison, RI.g, false);
                    gpu.scatterRowsCols(D.g, src.g, RI.g, CI.g);
                    cpu.scatterRowsCols(D.c, src.c, RI.c, CI.c);
                    exact("scatterRowsCols " + what, D);
                    poison.close();
                    Tensor big2 = gpu.empty(t, R * C + 1);
                    Tensor D1 = big2.view(1, R, C);
                    gpu.copyFromHost(D1, t == DType.BF16 ? bf(base) : base);
                    gpu.scatterRowsCols(D1, src.g, RI.g, CI.g);
                    exact("scatterRowsCols unaligned " + what, new Pair(D1, D.c));
                    big2.close();
                }
            }
        }
    }

    @Test
    void columnNormsAndSequenceMean() {
        for (DType t : FLOATS) {
            int R = 300, C = 70;
            Pair X = pair(rand(R * C, 1f), t, R, C), O = out(DType.F32, C);
            gpu.columnNorms(O.g, X.g);
            cpu.columnNorms(O.c, X.c);
            close("columnNorms " + t, O, 1e-5);
            // C = 70: scalar lanes; C = 64 and 4104: 8-wide lanes, several column tiles; T = 300: many
            // tokens per token stride; keyStart = T: an all-padding sequence gives 0
            for (int[] bt : new int[][] {{3, 20, 70}, {3, 20, 64}, {4, 300, 4104}}) {
                int B = bt[0], T = bt[1], CC = bt[2];
                int[] ks = B == 3 ? new int[] {0, 5, 19} : new int[] {0, 17, T, 299};
                Pair XS = pair(rand(B * T * CC, 1f), t, B * T, CC), KS = ints(ks, B), M = out(t, B, CC);
                gpu.sequenceMean(M.g, XS.g, KS.g, B, T);
                cpu.sequenceMean(M.c, XS.c, KS.c, B, T);
                close("sequenceMean " + t + " B=" + B + " T=" + T + " C=" + CC, M, tolFor(t));
            }
        }
    }

    @Test
    void maskPaddingRowsMatchesCpu() {
        int B = 4, T = 37, Cc = 72;
        int[] ks = {0, 5, 37, 36};
        for (DType t : new DType[] {DType.F32, DType.BF16}) {
            Pair X = inout(rand(B * T * Cc, 1f), t, B * T, Cc), KS = ints(ks, B);
            gpu.maskPaddingRows(X.g, KS.g, B, T);
            cpu.maskPaddingRows(X.c, KS.c, B, T);
            exact("maskPaddingRows " + t, X);
        }
    }
}
