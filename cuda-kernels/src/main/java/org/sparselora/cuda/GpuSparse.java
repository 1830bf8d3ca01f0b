package org.sparselora.cuda;

import org.sparselora.engine.backend.Tensor;

/**
 * A {@link GpuBackend}'s SparseLoRA data movement: row and column gathers and scatters (the kept
 * channels of a sparse layer), index padding, the joined SwiGLU forward and backward over add and
 * plain rows, column norms, per-sequence means and padding masks.
 */
final class GpuSparse extends GpuOps {
    GpuSparse(GpuBackend owner, GpuDevice dev) { super(owner, dev); }

    void gatherRows(Tensor out, Tensor src, Tensor idx) {
        bind();
        GpuTensor O = own(out), S = own(src), I = own(idx);
        needI32("gatherRows", "idx", I);
        int k = (int) I.numel(), R = S.dim(0), C = (int) (S.numel() / Math.max(1, R));
        needNumel("gatherRows", "out", O, (long) k * C);
        if (k == 0 || C == 0) return;
        boolean vec = C % 8 == 0 && aligned(O, S);
        launch("gather_rows_" + sfx(O, "gatherRows") + "_" + sfx(S, "gatherRows"), vec ? rowUnitBlocks(k, C) : k, 1,
                vec ? 256 : rowThreads(C, 256), 0,
                new Kernels.Args().ptr(O.address()).ptr(S.address()).ptr(I.address()).i(R).i(C).i(k).i(vec ? 1 : 0));
    }

    void scatterRows(Tensor out, Tensor src, Tensor idx, boolean accumulate) {
        bind();
        GpuTensor O = own(out), S = own(src), I = own(idx);
        needI32("scatterRows", "idx", I);
        int k = (int) I.numel(), R = O.dim(0), C = (int) (O.numel() / Math.max(1, R));
        needNumel("scatterRows", "src", S, (long) k * C);
        if (k == 0 || C == 0) return;
        boolean vec = C % 8 == 0 && aligned(O, S);
        launch("scatter_rows_" + sfx(O, "scatterRows") + "_" + sfx(S, "scatterRows"), vec ? rowUnitBlocks(k, C) : k, 1,
                vec ? 256 : rowThreads(C, 256), 0,
                new Kernels.Args().ptr(O.address()).ptr(S.address()).ptr(I.address()).i(R).i(C).i(k).i(accumulate ? 1 : 0).i(vec ? 1 : 0));
    }

    /** Blocks of 256 threads for a vectorized row gather/scatter: each thread moves 4 of the k·C/8 16-byte units per pass. */
    private static int rowUnitBlocks(int k, int C) {
        long units = (long) k * (C / 8);
        return (int) Math.max(1, Math.min(SM_BLOCKS * 2L, (units + 1023) / 1024));
    }

    void gatherCols(Tensor out, Tensor src, Tensor idx) {
        bind();
        GpuTensor O = own(out), S = own(src), I = own(idx);
        needI32("gatherCols", "idx", I);
        int k = (int) I.numel(), C = S.dim(-1), R = (int) (S.numel() / Math.max(1, C));
        needNumel("gatherCols", "out", O, (long) R * k);
        long total = (long) R * k;
        if (total == 0) return;
        launch("gather_cols_" + sfx(O, "gatherCols") + "_" + sfx(S, "gatherCols"), (int) Math.min(SM_BLOCKS * 4L, R), 1, rowThreads(k, 256), 0,
                new Kernels.Args().ptr(O.address()).ptr(S.address()).ptr(I.address()).i(R).i(C).i(k));
    }

    void scatterCols(Tensor out, Tensor src, Tensor idx, boolean accumulate) {
        bind();
        GpuTensor O = own(out), S = own(src), I = own(idx);
        needI32("scatterCols", "idx", I);
        int k = (int) I.numel(), C = O.dim(-1), R = (int) (O.numel() / Math.max(1, C));
        needNumel("scatterCols", "src", S, (long) R * k);
        long total = (long) R * k;
        if (total == 0) return;
        launch("scatter_cols_" + sfx(O, "scatterCols") + "_" + sfx(S, "scatterCols"), (int) Math.min(SM_BLOCKS * 4L, R), 1, rowThreads(k, 256), 0,
                new Kernels.Args().ptr(O.address()).ptr(S.address()).ptr(I.address()).i(R).i(C).i(k).i(accumulate ? 1 : 0));
    }

    void gatherRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
        bind();
        GpuTensor O = own(out), S = own(src), RI = own(rowIdx), CI = own(colIdx);
        needI32("gatherRowsCols", "rowIdx", RI);
        needI32("gatherRowsCols", "colIdx", CI);
        int n = (int) RI.numel(), k = (int) CI.numel(), C = S.dim(-1), R = (int) (S.numel() / Math.max(1, C));
        needNumel("gatherRowsCols", "out", O, (long) n * k);
        if ((long) n * k == 0) return;
        boolean vec = k % 8 == 0 && aligned(O);
        long work = (long) n * (vec ? k / 8 : k);
        launch("gather_rows_cols_" + sfx(O, "gatherRowsCols") + "_" + sfx(S, "gatherRowsCols"),
                (int) Math.max(1, Math.min(SM_BLOCKS * 4L, (work + 255) / 256)), 1, 256, 0,
                new Kernels.Args().ptr(O.address()).ptr(S.address()).ptr(RI.address()).ptr(CI.address())
                        .i(n).i(R).i(C).i(k).i(vec ? 1 : 0));
    }

    /** Bytes per column of scatter_rows_cols' inverse column map (sparse.cu). */
    private static final int SCATTER_MAP_ENTRY_BYTES = Kernels.constant("sparse", "scatter_rows_cols_smem_entry_bytes");
    /** Widest row whose inverse column map (16-bit entries) fits the 48 KiB of shared memory a launch gets by default. */
    static final int SCATTER_MAP_MAX_COLS = Kernels.DEFAULT_DYNAMIC_SHARED_BYTES / SCATTER_MAP_ENTRY_BYTES;

    void scatterRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
        bind();
        GpuTensor O = own(out), S = own(src), RI = own(rowIdx), CI = own(colIdx);
        needI32("scatterRowsCols", "rowIdx", RI);
        needI32("scatterRowsCols", "colIdx", CI);
        int n = (int) RI.numel(), k = (int) CI.numel(), C = O.dim(-1), R = (int) (O.numel() / Math.max(1, C));
        needNumel("scatterRowsCols", "src", S, (long) n * k);
        if (n == 0 || C == 0) return;
        if (k > C) throw new IllegalArgumentException("scatterRowsCols: " + k + " column indices for rows of " + C + " (" + O + ")");
        boolean map = C <= SCATTER_MAP_MAX_COLS;     // k ≤ C < 65535 then fits the 16-bit positions
        boolean vec = map && C % 8 == 0 && aligned(O);
        // a few blocks per SM; each builds the column map once for its rows
        int rowsPerBlock = Math.max(1, (n + SM_BLOCKS / 2 - 1) / (SM_BLOCKS / 2));
        int blocks = (n + rowsPerBlock - 1) / rowsPerBlock;
        int smem = map ? (C * SCATTER_MAP_ENTRY_BYTES + 15) / 16 * 16 : 0;
        launch("scatter_rows_cols_" + sfx(O, "scatterRowsCols") + "_" + sfx(S, "scatterRowsCols"), blocks, 1,
                rowThreads(vec ? C / 8 : C, 256), smem,
                new Kernels.Args().ptr(O.address()).ptr(S.address()).ptr(RI.address()).ptr(CI.address())
                        .i(n).i(R).i(C).i(k).i(rowsPerBlock).i(map ? 1 : 0).i(vec ? 1 : 0));
    }

    /** Bytes per bitmap word (32 values) of pad_index_set (sparse.cu). */
    private static final int PAD_WORD_BYTES = Kernels.constant("sparse", "pad_index_set_smem_entry_bytes");
    /** Widest index range padIndexSet's bitmap covers in the 48 KiB of shared memory a launch gets by default. */
    static final int PAD_INDEX_MAX_N = Kernels.DEFAULT_DYNAMIC_SHARED_BYTES / PAD_WORD_BYTES * 32;

    void padIndexSet(Tensor out, Tensor idx, int n) {
        bind();
        GpuTensor O = own(out), I = own(idx);
        needI32("padIndexSet", "out", O);
        needI32("padIndexSet", "idx", I);
        int k = (int) I.numel(), kp = (int) O.numel();
        if (kp < k || kp > n) throw new IllegalArgumentException("padIndexSet: " + k + " indices cannot be padded to " + kp + " of [0, " + n + ")");
        if (n > PAD_INDEX_MAX_N) throw new IllegalArgumentException("padIndexSet: range of " + n + " exceeds the kernel's bitmap of " + PAD_INDEX_MAX_N);
        if (kp == 0) return;
        int words = (n + 31) / 32;
        launch("pad_index_set", 1, 1, 256, words * PAD_WORD_BYTES, new Kernels.Args().ptr(O.address()).ptr(I.address()).i(k).i(kp).i(n));
    }

    void fillCols(Tensor t, int col0, float value) {
        bind();
        GpuTensor T = own(t);
        int C = T.dim(-1), R = (int) (T.numel() / Math.max(1, C));
        if (col0 < 0 || col0 > C) throw new IllegalArgumentException("fillCols: column " + col0 + " outside rows of " + C + " (" + T + ")");
        long work = (long) R * (C - col0);
        if (work == 0) return;
        launch("fill_cols_" + sfx(T, "fillCols"), (int) Math.max(1, Math.min(SM_BLOCKS * 4L, (work + 255) / 256)), 1, 256, 0,
                new Kernels.Args().ptr(T.address()).i(R).i(C).i(col0).f(value));
    }

    void scatterAddRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
        bind();
        GpuTensor O = own(out), S = own(src), RI = own(rowIdx), CI = own(colIdx);
        needI32("scatterAddRowsCols", "rowIdx", RI);
        needI32("scatterAddRowsCols", "colIdx", CI);
        if (S.dtype() != O.dtype()) throw new IllegalArgumentException("scatterAddRowsCols: out and src must share a dtype, got " + O + " and " + S);
        int n = (int) RI.numel(), k = (int) CI.numel(), C = O.dim(-1), R = (int) (O.numel() / Math.max(1, C));
        needNumel("scatterAddRowsCols", "src", S, (long) n * k);
        long work = (long) n * k;
        if (work == 0) return;
        launch("scatter_add_rows_cols_" + sfx(O, "scatterAddRowsCols"), (int) Math.max(1, Math.min(SM_BLOCKS * 4L, (work + 255) / 256)), 1, 256, 0,
                new Kernels.Args().ptr(O.address()).ptr(S.address()).ptr(RI.address()).ptr(CI.address()).i(n).i(R).i(C).i(k));
    }

    /** Bytes per column of the joined swiglu kernels' kept-column map (elementwise.cu). */
    private static final int JOIN_MAP_ENTRY_BYTES = Kernels.constant("elementwise", "swiglu_join_smem_entry_bytes");
    /** Widest row whose kept-column map fits the shared memory a launch gets by default. */
    static final int JOIN_MAP_MAX_COLS = Kernels.DEFAULT_DYNAMIC_SHARED_BYTES / JOIN_MAP_ENTRY_BYTES;

    /** Rows named by an optional index set (null: none). */
    private static int rowCount(GpuTensor idx) { return idx == null ? 0 : (int) idx.numel(); }

    private static long addr(GpuTensor t) { return t == null ? 0L : t.address(); }

    /**
     * The launch of a joined swiglu kernel over nAdd + nPlain rows of C: 8-wide when C % 8 == 0 and
     * every tensor is aligned; with k kept columns each block holds their inverse map (C 16-bit
     * entries) in shared memory.
     */
    private void joinLaunch(String name, int rows, int C, int k, boolean alignedOk, ArgFill fill) {
        boolean vec = alignedOk && C % 8 == 0;
        long work = (long) rows * (vec ? C / 8 : C);
        if (work == 0) return;
        int smem = k > 0 ? (C * JOIN_MAP_ENTRY_BYTES + 15) / 16 * 16 : 0;
        // one resident wave: with 28 KiB of column map per block and ~45 registers per thread a fixed
        // grid would leave a partial second wave of blocks (each with the same share of the work)
        int wave = kernels.residentBlocksPerSm(name, 256, smem) * smCount;
        int blocks = (int) Math.max(1, Math.min(wave, (work + 255) / 256));
        launch(name, blocks, 1, 256, smem, fill.fill(new Kernels.Args()).i(vec ? 1 : 0));
    }

    /** The joined kernels' 8-wide path counts units in 32-bit ints. */
    private static boolean joinFitsInt(int rows, int C) { return (long) rows * (C / 8) < Integer.MAX_VALUE / 2; }

    private static void sameShapeRows(String op, String what, GpuTensor t, long n, int C) {
        if (t != null && t.numel() != n * C) throw new IllegalArgumentException(op + ": " + what + " must be (" + n + "," + C + "), got " + t);
    }

    private GpuTensor ownOrNull(Tensor t) { return t == null ? null : own(t); }

    private static void sameDtype(String op, GpuTensor ref, GpuTensor... ts) {
        for (GpuTensor t : ts)
            if (t != null && t.dtype() != ref.dtype()) throw new IllegalArgumentException(op + ": every float tensor must share g's dtype " + ref.dtype() + ", got " + t);
    }

    /** Whether every non-null tensor is 16-byte aligned. */
    private static boolean alignedOrNull(GpuTensor... ts) {
        for (GpuTensor t : ts) if (t != null && (t.address() & 15) != 0) return false;
        return true;
    }

    /**
     * The row and column sets of a joined swiglu call (owned; null where absent) and its sizes: na add
     * rows and np plain rows of g (R,C), k kept columns (none without plain rows).
     */
    private record JoinSets(GpuTensor addRows, GpuTensor plainRows, GpuTensor keptCols, int na, int np, int k, int C, int R) {
        /** Whether the kernels take the call: the kept-column map fits shared memory and the unit count an int (else the reference path). */
        boolean kernelTakes() { return !((k > 0 && C > JOIN_MAP_MAX_COLS) || !joinFitsInt(na + np, C)); }

        /**
         * The index sets are I32, the add-row tensors (ts[0..2], null passes) are (na, C) and the
         * kept-column ones (ts[3..5]) (np, kept); names: the six tensors' names, comma-separated.
         */
        void check(String op, int kept, String names, GpuTensor... ts) {
            if (addRows != null) needI32(op, "addRows", addRows);
            if (plainRows != null) needI32(op, "plainRows", plainRows);
            if (keptCols != null) needI32(op, "keptCols", keptCols);
            String[] n = names.split(",");
            for (int i = 0; i < 6; i++) sameShapeRows(op, n[i], ts[i], i < 3 ? na : np, i < 3 ? C : kept);
        }
    }

    private JoinSets joinSets(GpuTensor g, Tensor addRows, Tensor plainRows, Tensor keptCols) {
        GpuTensor AR = ownOrNull(addRows), PR = ownOrNull(plainRows);
        int na = rowCount(AR), np = rowCount(PR);
        GpuTensor KC = np == 0 ? null : ownOrNull(keptCols);
        int C = g.dim(-1);
        return new JoinSets(AR, PR, KC, na, np, rowCount(KC), C, (int) (g.numel() / Math.max(1, C)));
    }

    boolean swigluJoin(Tensor h, Tensor g, Tensor u, Tensor addG, Tensor addU, Tensor addRows, Tensor hAdd,
                       Tensor plainRows, Tensor keptG, Tensor keptU, Tensor keptCols, Tensor hKept) {
        bind();
        GpuTensor H = own(h), G = own(g), U = own(u);
        JoinSets s = joinSets(G, addRows, plainRows, keptCols);
        int na = s.na(), np = s.np(), k = s.k(), C = s.C();
        if (!s.kernelTakes()) {
            return false;
        }
        GpuTensor AG = na == 0 ? null : own(addG), AU = na == 0 ? null : own(addU), HA = na == 0 ? null : own(hAdd);
        GpuTensor KG = k == 0 ? null : own(keptG), KU = k == 0 ? null : own(keptU), HK = k == 0 ? null : ownOrNull(hKept);
        sameCount("swigluJoin", H, G);
        sameCount("swigluJoin", U, G);
        sameDtype("swigluJoin", G, H, U, AG, AU, HA, KG, KU, HK);
        s.check("swigluJoin", k, "addG,addU,hAdd,keptG,keptU,hKept", AG, AU, HA, KG, KU, HK);
        boolean al = alignedOrNull(H, G, U, AG, AU, HA);
        joinLaunch("swiglu_join_" + sfx(G, "swigluJoin"), na + np, C, k, al,
                a -> a.ptr(H.address()).ptr(G.address()).ptr(U.address()).ptr(addr(AG)).ptr(addr(AU)).ptr(addr(s.addRows())).ptr(addr(HA))
                        .ptr(addr(s.plainRows())).ptr(addr(KG)).ptr(addr(KU)).ptr(addr(s.keptCols())).ptr(addr(HK)).i(na).i(np).i(k).i(s.R()).i(C));
        return true;
    }

    boolean swigluBackwardJoin(Tensor dg, Tensor du, Tensor dh, Tensor g, Tensor u, Tensor addDh, Tensor addRows,
                               Tensor dgAdd, Tensor duAdd, Tensor plainRows, Tensor keptDh, Tensor keptCols,
                               Tensor dgKept, Tensor duKept) {
        bind();
        GpuTensor DG = own(dg), DU = own(du), DH = own(dh), G = own(g), U = own(u);
        JoinSets s = joinSets(G, addRows, plainRows, keptCols);
        int na = s.na(), np = s.np(), k = s.k(), C = s.C();
        if (!s.kernelTakes()) {
            return false;
        }
        GpuTensor AD = na == 0 ? null : own(addDh), DGA = na == 0 ? null : own(dgAdd), DUA = na == 0 ? null : own(duAdd);
        GpuTensor KD = k == 0 ? null : ownOrNull(keptDh), DGK = k == 0 ? null : ownOrNull(dgKept), DUK = k == 0 || DGK == null ? null : own(duKept);
        if (KD == null && DGK == null) k = 0;            // nothing kept to add or gather: no map needed
        for (GpuTensor t : new GpuTensor[] {DG, DU, DH, U}) sameCount("swigluBackwardJoin", t, G);
        sameDtype("swigluBackwardJoin", G, DG, DU, DH, U, AD, DGA, DUA, KD, DGK, DUK);
        s.check("swigluBackwardJoin", k, "addDh,dgAdd,duAdd,keptDh,dgKept,duKept", AD, DGA, DUA, KD, DGK, DUK);
        boolean al = alignedOrNull(DG, DU, DH, G, U, AD, DGA, DUA);
        int kk = k;
        joinLaunch("swiglu_bwd_join_" + sfx(G, "swigluBackwardJoin"), na + np, C, kk, al,
                a -> a.ptr(DG.address()).ptr(DU.address()).ptr(DH.address()).ptr(G.address()).ptr(U.address()).ptr(addr(AD)).ptr(addr(s.addRows()))
                        .ptr(addr(DGA)).ptr(addr(DUA)).ptr(addr(s.plainRows())).ptr(addr(KD)).ptr(addr(s.keptCols())).ptr(addr(DGK)).ptr(addr(DUK))
                        .i(na).i(np).i(kk).i(s.R()).i(C));
        return true;
    }

    void columnNorms(Tensor out, Tensor x) {
        bind();
        GpuTensor O = own(out), X = own(x);
        needF32("columnNorms", "out", O);
        int C = X.dim(-1), R = (int) (X.numel() / Math.max(1, C));
        needNumel("columnNorms", "out", O, C);
        if (C == 0) return;
        int rowsPerChunk = 64, chunks = Math.max(1, (R + rowsPerChunk - 1) / rowsPerChunk);
        long part = scratch("colnorm.part", (long) chunks * C * 4);
        int gx = (C + 255) / 256;
        launch("colsumsq_" + sfx(X, "columnNorms"), gx, chunks, 256, 0, new Kernels.Args().ptr(part).ptr(X.address()).i(R).i(C).i(rowsPerChunk));
        launch("colnorm_finish", gx, 1, 256, 0, new Kernels.Args().ptr(O.address()).ptr(part).i(chunks).i(C));
    }

    void sequenceMean(Tensor out, Tensor x, Tensor keyStart, int batch, int seqLen) {
        bind();
        GpuTensor O = own(out), X = own(x), KS = own(keyStart);
        needI32("sequenceMean", "keyStart", KS);
        needNumel("sequenceMean", "keyStart", KS, batch);
        int C = X.dim(-1);
        needNumel("sequenceMean", "x", X, (long) batch * seqLen * C);
        needNumel("sequenceMean", "out", O, (long) batch * C);
        if ((long) batch * C == 0) return;
        // a block of 32 lanes × 16 token strides per (tile of 32·8 or 32 columns, sequence)
        boolean vec = C % 8 == 0 && aligned(X);
        int tile = 32 * (vec ? 8 : 1);
        launch("seq_mean_" + sfx(O, "sequenceMean") + "_" + sfx(X, "sequenceMean"), (C + tile - 1) / tile, batch, 32 * 16, 0,
                new Kernels.Args().ptr(O.address()).ptr(X.address()).ptr(KS.address()).i(batch).i(seqLen).i(C).i(vec ? 1 : 0));
    }

    void maskPaddingRows(Tensor x, Tensor keyStart, int batch, int seqLen) {
        bind();
        GpuTensor X = own(x), KS = own(keyStart);
        needI32("maskPaddingRows", "keyStart", KS);
        needNumel("maskPaddingRows", "keyStart", KS, batch);
        long rows = (long) batch * seqLen;
        if (rows == 0) return;
        int C = (int) (X.numel() / rows);
        needNumel("maskPaddingRows", "x", X, rows * C);
        launch("mask_padding_rows_" + sfx(X, "maskPaddingRows"), seqLen, batch, 128, 0,
                new Kernels.Args().ptr(X.address()).ptr(KS.address()).i(seqLen).i(C));
    }
}
