package org.sparselora.engine.sparse;

import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.SparseOps;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.model.LlamaConfig;

/**
 * Contextual channel selection (docs/METHOD.md#channel-selection), on the device through {@link Backend} ops so it runs on
 * the GPU as it does on the CPU. One index set per layer per step, shared by the whole batch, from
 * the layer's post-norm input of all (non-padding) tokens and the SVD predictor's factors:
 *
 * <ul>
 *   <li><b>MLP</b>: per-sequence mean over non-padding tokens x̄ (B,C);
 *       a = silu(x̄·Pg·Qg) ⊙ (x̄·Pu·Qu) (B,I); score = column L2 norm of a; top-k.</li>
 *   <li><b>Q/K</b>: q̂ = x·Pq·Qq, k̂ = x·Pk·Qk over the non-padding tokens; per-channel norms; per
 *       KV channel (g,d) score ‖k̂_(g,d)‖ · mean over the query heads h of group g of ‖q̂_(h,d)‖;
 *       kept K = the top-k (g,d); kept Q = (h,d) for every h of group g (same d in every head, so
 *       q·k dot products stay consistent).</li>
 *   <li><b>V/O</b>: v̂ norms per channel, top-k over Hkv·D; o_proj input columns = (h,d) for every
 *       query head h of the kept v channel's group.</li>
 * </ul>
 * Padding never influences a score: the MLP mean skips it and attention gathers non-padding rows
 * first. Layout is HF head-contiguous: channel (head, d) = head·D + d.
 *
 * <p>Per layer the device work is small and launch-bound, so it is batched: t = x·P for every factor
 * of a module in one {@link Backend#matmulSharedA} (the P are stacked), and the scores come from the
 * rank-r products t through {@link SparseOps#lowRankColumnNorms} (q̂, k̂, v̂ together) and
 * {@link SparseOps#lowRankSwigluColumnNorms} (the MLP), which a GPU runs without writing the (n, M)
 * estimates, and the K and V top-k are one {@link SparseOps#topKRows}, their expansion to the Q and O
 * channels one {@link SparseOps#expandGroupChannelsRows} into one index tensor. The per-layer
 * temporaries (x̄, t, scores, norms) are scratch tensors kept by this object, so a layer's selection
 * asks the backend's pool for nothing but its result. On the CPU these are the same matmul →
 * columnNorms sequence as before (the same bits).
 *
 * <p>With N data-parallel workers each one holds b/N rows of the batch. Every score above is a
 * square root of a per-channel sum over rows of squares (or, for K, a product of such norms), so a
 * {@link ScoreExchange} sums the workers' squared norms — padding and the per-sequence means stay
 * local to each worker, where they belong — and each worker then runs the top-k on the global
 * norms: one selection, the one a single worker would make on the whole batch. Only then do the
 * norms travel through the host; with one worker they stay on the device.
 */
public final class ChannelSelection implements AutoCloseable {

    private final Backend be;
    private final SparseOps sp;   // the selection's own ops: scores, top-k, GQA expansion
    private final LlamaConfig cfg;
    private final SparsityConfig.Resolved sparsity;
    private final int rank;
    /**
     * Device factors per layer: proj → {P (in,r), Q (r,out)} in the backend's compute type. The P of
     * one module (gate, up; q, k, v) are views of one stacked (count·in, r) tensor, since they share
     * their input and rank: a device multiplies the input by all of them in one batched GEMM.
     */
    private final List<EnumMap<SvdPredictor.Proj, Tensor[]>> factors = new ArrayList<>();
    /** What {@link #close()} frees: the stacked P tensors and every Q (the P views free nothing). */
    private final List<Tensor> owned = new ArrayList<>();

    public ChannelSelection(Backend be, SvdPredictor predictor, SparsityConfig.Resolved sparsity) {
        this.be = be;
        this.sp = be.sparse();
        this.cfg = predictor.config();
        this.sparsity = sparsity;
        this.rank = predictor.rank();
        DType ct = be.computeType();
        SvdPredictor.Proj[][] modules = {{SvdPredictor.Proj.GATE, SvdPredictor.Proj.UP},
                                         {SvdPredictor.Proj.Q, SvdPredictor.Proj.K, SvdPredictor.Proj.V}};
        for (int layer = 0; layer < cfg.numLayers(); layer++) {
            EnumMap<SvdPredictor.Proj, Tensor[]> m = new EnumMap<>(SvdPredictor.Proj.class);
            for (SvdPredictor.Proj[] module : modules) {
                if (!(module[0].mlp() ? sparsity.mlpSparse(layer) : sparsity.attentionSparse(layer))) continue;
                LowRankSvd.Factors[] fs = new LowRankSvd.Factors[module.length];
                for (int i = 0; i < module.length; i++) {
                    fs[i] = predictor.get(layer, module[i]);
                    if (fs[i] == null)
                        throw new IllegalArgumentException("the SVD predictor has no factors for " + module[i].key(layer)
                                + " but the sparsity config makes that layer sparse; rebuild the predictor for this config");
                    if (fs[i].in() != fs[0].in() || fs[i].rank() != fs[0].rank())
                        throw new IllegalArgumentException("the SVD predictor's factors of " + module[i].key(layer) + " are (" + fs[i].in()
                                + ", " + fs[i].rank() + "), those of " + module[0].key(layer) + " (" + fs[0].in() + ", " + fs[0].rank() + ")");
                }
                int in = fs[0].in(), r = fs[0].rank();
                Tensor stack = be.empty(ct, module.length * in, r);
                owned.add(stack);
                for (int i = 0; i < module.length; i++) {
                    Tensor p = stack.view((long) i * in * r, in, r);
                    be.copyFromHost(p, fs[i].p());
                    Tensor q = be.fromFloats(fs[i].q(), ct, r, fs[i].out());
                    owned.add(q);
                    m.put(module[i], new Tensor[] {p, q});
                }
            }
            factors.add(m);
        }
    }

    public LlamaConfig config() { return cfg; }

    public SparsityConfig.Resolved sparsity() { return sparsity; }

    public int rank() { return rank; }

    /**
     * Kept intermediate channels of one layer. x (B·T, C) post_attention_layernorm output;
     * keyStart (B) I32 first non-padding position per sequence. Returns (k) I32 ascending; caller owns it.
     */
    public Tensor selectMlp(int layer, Tensor x, Tensor keyStart, int batch, int seqLen) {
        return selectMlp(layer, x, keyStart, batch, seqLen, ScoreExchange.SINGLE);
    }

    /** {@link #selectMlp(int, Tensor, Tensor, int, int)} over the union of the batches of {@code exchange}'s workers. */
    public Tensor selectMlp(int layer, Tensor x, Tensor keyStart, int batch, int seqLen, ScoreExchange exchange) {
        int c = cfg.hiddenSize(), inter = cfg.intermediateSize();
        DType ct = be.computeType();
        EnumMap<SvdPredictor.Proj, Tensor[]> f = factors.get(layer);
        Tensor[] g = f.get(SvdPredictor.Proj.GATE), u = f.get(SvdPredictor.Proj.UP);
        Tensor xbar = scratch(Scratch.MLP_XBAR, ct, batch, c);           // (B,C)
        Tensor tgu = scratch(Scratch.MLP_T, ct, 2 * batch, rank);        // x̄·Pg (B,r) then x̄·Pu (B,r)
        Tensor scores = scratch(Scratch.MLP_SCORES, DType.F32, inter);   // (I)
        Tensor tg = tgu.view(0, batch, rank), tu = tgu.view((long) batch * rank, batch, rank);
        sp.sequenceMean(xbar, x, keyStart, batch, seqLen);
        be.matmulSharedA(new Tensor[] {tg, tu}, xbar, new Tensor[] {g[0], u[0]});
        // ‖silu(x̄·Pg·Qg) ⊙ (x̄·Pu·Qu)‖ per channel over this worker's sequences; a device backend
        // never writes the (B,I) estimates
        sp.lowRankSwigluColumnNorms(scores, tg, g[1], tu, u[1]);
        if (exchange.workers() > 1) globalNorms(exchange, layer, "mlp", scores);
        Tensor idx = be.empty(DType.I32, sparsity.keptMlp(layer));
        sp.topK(idx, scores, sparsity.keptMlp(layer));
        return idx;
    }

    /**
     * Kept attention channels; each (·) I32 ascending. k, v, q and o are views of {@code storage}, one
     * I32 tensor laid out [k | v | q | o] (k and v the two rows of a (2, kept) matrix, q and o those of
     * a (2, kept·G) one); the caller owns storage ({@link #owned()}, {@link #close()}).
     */
    public record AttentionChannels(Tensor q, Tensor k, Tensor v, Tensor o, Tensor storage) implements AutoCloseable {
        /** The tensors to free when the selection is no longer needed. */
        public java.util.List<Tensor> owned() { return java.util.List.of(storage); }

        @Override
        public void close() { for (Tensor t : owned()) t.close(); }
    }

    /**
     * Kept attention channels of one layer. x (N, C) input_layernorm output; rows (n) I32 the
     * non-padding token rows to score over, or null when no token is padding.
     */
    public AttentionChannels selectAttention(int layer, Tensor x, Tensor rows) {
        return selectAttention(layer, x, rows, ScoreExchange.SINGLE);
    }

    /** {@link #selectAttention(int, Tensor, Tensor)} over the union of the tokens of {@code exchange}'s workers. */
    public AttentionChannels selectAttention(int layer, Tensor x, Tensor rows, ScoreExchange exchange) {
        int c = cfg.hiddenSize(), hq = cfg.numHeads(), hkv = cfg.numKvHeads(), d = cfg.headDim();
        int group = hq / hkv;
        int kept = sparsity.keptKv(layer);
        DType ct = be.computeType();
        EnumMap<SvdPredictor.Proj, Tensor[]> f = factors.get(layer);
        Tensor xs = x;
        int n = x.dim(0);
        if (rows != null) {
            n = rows.dim(0);
            xs = be.empty(ct, n, c);
            be.gatherRows(xs, x, rows);                                // (n,C) non-padding tokens only
        }
        int qd = hq * d, kvd = hkv * d;
        Tensor out = null;
        try {
            // x·Pq, x·Pk, x·Pv, (n,r) each; one F32 buffer [q̂ norms | k̂ norms | K scores | v̂ norms]: the K
            // scores and V norms are the two rows of one (2, Hkv·D) matrix, so one topKRows selects both
            Tensor tqkv = scratch(Scratch.ATTN_T, ct, 3 * n, rank);
            Tensor norms = scratch(Scratch.ATTN_NORMS, DType.F32, qd + 3 * kvd);
            long tr = (long) n * rank;
            Tensor tq = tqkv.view(0, n, rank), tk = tqkv.view(tr, n, rank), tv = tqkv.view(2 * tr, n, rank);
            Tensor qn = norms.view(0, qd), kn = norms.view(qd, kvd), score = norms.view(qd + kvd, kvd);
            Tensor vn = norms.view(qd + 2 * kvd, kvd);
            Tensor[] pq = f.get(SvdPredictor.Proj.Q), pk = f.get(SvdPredictor.Proj.K), pv = f.get(SvdPredictor.Proj.V);
            be.matmulSharedA(new Tensor[] {tq, tk, tv}, xs, new Tensor[] {pq[0], pk[0], pv[0]});   // one batched GEMM on a device
            // per-channel norms of x·P·Q for q, k, v together (a device never writes the (n, ·) estimates)
            sp.lowRankColumnNorms(new Tensor[] {qn, kn, vn}, new Tensor[] {tq, tk, tv}, new Tensor[] {pq[1], pk[1], pv[1]});
            if (exchange.workers() > 1) globalNorms(exchange, layer, "qkv", qn, kn, vn);
            sp.kvChannelScores(score, qn, kn, hkv, group, d);

            // one allocation for the four index sets: [kept K | kept V] (2, kept), then [Q | O] (2, kept·G)
            long kg = (long) kept * group;
            out = be.empty(DType.I32, (int) (2L * kept + 2L * kg));
            Tensor kv = out.view(0, 2, kept), qo = out.view(2L * kept, 2, (int) kg);
            sp.topKRows(kv, norms.view(qd + kvd, 2, kvd), kept);
            sp.expandGroupChannelsRows(qo, kv, group, d);            // K's row -> Q's, V's row -> O's
            Tensor kIdx = out.view(0, kept), vIdx = out.view(kept, kept);
            Tensor qIdx = out.view(2L * kept, (int) kg), oIdx = out.view(2L * kept + kg, (int) kg);
            return new AttentionChannels(qIdx, kIdx, vIdx, oIdx, out);
        } catch (RuntimeException e) {
            if (out != null) out.close();
            throw e;
        } finally {
            if (xs != x) xs.close();
        }
    }

    /** The predictor's per-layer temporaries, kept between layers and steps (no pool traffic per layer). */
    private enum Scratch { MLP_XBAR, MLP_T, MLP_SCORES, ATTN_T, ATTN_NORMS }

    private final EnumMap<Scratch, Tensor> scratch = new EnumMap<>(Scratch.class);

    /**
     * A view of this shape on the scratch tensor {@code which}: the one from the last call when it is
     * of this dtype and large enough, else a new one. The backend's queue runs in order, so a layer's
     * selection never overwrites values the previous layer's ops still read. A replaced scratch tensor
     * is kept (in {@link #retired}) until {@link #close()}, never freed earlier: a recorded step (a CUDA
     * graph of an earlier shape) still reads and writes it at every replay, and its memory must not go
     * to another tensor meanwhile.
     */
    private Tensor scratch(Scratch which, DType dtype, int... shape) {
        long need = 1;
        for (int d : shape) need *= d;
        Tensor t = scratch.get(which);
        if (t == null || t.dtype() != dtype || t.numel() < need) {
            if (t != null) retired.add(t);
            scratch.remove(which);
            if (need > Integer.MAX_VALUE) throw new IllegalArgumentException("predictor scratch " + which + " of " + need + " elements");
            long grown = t == null ? 0 : t.numel() + t.numel() / 2;   // grow by ≥ 1.5×: few retirements
            t = be.empty(dtype, (int) Math.min(Integer.MAX_VALUE, Math.max(need, grown)));
            scratch.put(which, t);
        }
        return t.view(0, shape);
    }

    /** Scratch tensors replaced by larger ones: kept until {@link #close()} (see {@link #scratch}). */
    private final List<Tensor> retired = new ArrayList<>();

    /**
     * Replaces each of {@code norms} (per-channel L2 norms over this worker's rows) by the norms over
     * every worker's rows: squares, one all-reduce of all of them together, square roots.
     */
    private void globalNorms(ScoreExchange exchange, int layer, String what, Tensor... norms) {
        float[][] host = new float[norms.length][];
        int total = 0;
        for (int i = 0; i < norms.length; i++) {
            host[i] = be.toFloats(norms[i]);
            total += host[i].length;
        }
        float[] sq = new float[total];
        for (int i = 0, o = 0; i < host.length; o += host[i].length, i++)
            for (int j = 0; j < host[i].length; j++) sq[o + j] = host[i][j] * host[i][j];
        float[] sum = exchange.allReduceSum(layer, what, sq);   // shared between workers: read only
        if (sum.length != total)
            throw new IllegalStateException(exchange + " returned " + sum.length + " " + what + " scores of layer " + layer + ", expected " + total);
        for (int i = 0, o = 0; i < host.length; o += host[i].length, i++) {
            float[] g = new float[host[i].length];
            for (int j = 0; j < g.length; j++) g[j] = (float) Math.sqrt(sum[o + j]);
            be.copyFromHost(norms[i], g);
        }
    }

    /** Predictor FLOPs of one MLP selection over {@code batch} sequence means. */
    public long mlpPredictorFlops(int batch) { return FlopCount.mlpPredictor(cfg, rank, batch); }

    /** Predictor FLOPs of one attention selection over n tokens (q, k, v estimates). */
    public long attentionPredictorFlops(int tokens) { return FlopCount.attentionPredictor(cfg, rank, tokens); }

    @Override
    public void close() {
        for (Tensor t : owned) t.close();
        owned.clear();
        for (Tensor t : scratch.values()) t.close();
        scratch.clear();
        for (Tensor t : retired) t.close();
        retired.clear();
        factors.clear();
    }
}
