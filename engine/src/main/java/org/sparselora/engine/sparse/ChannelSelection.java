package org.sparselora.engine.sparse;

import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.model.LlamaConfig;

/**
 * Contextual channel selection (SPEC §3), on the device through {@link Backend} ops so it runs on
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
 * <p>With N data-parallel workers each one holds b/N rows of the batch. Every score above is a
 * square root of a per-channel sum over rows of squares (or, for K, a product of such norms), so a
 * {@link ScoreExchange} sums the workers' squared norms — padding and the per-sequence means stay
 * local to each worker, where they belong — and each worker then runs the top-k on the global
 * norms: one selection, the one a single worker would make on the whole batch. Only then do the
 * norms travel through the host; with one worker they stay on the device.
 */
public final class ChannelSelection implements AutoCloseable {

    private final Backend be;
    private final LlamaConfig cfg;
    private final SparsityConfig.Resolved sparsity;
    private final int rank;
    /** Device factors per layer: proj → {P (in,r), Q (r,out)} in the backend's compute type. */
    private final List<EnumMap<SvdPredictor.Proj, Tensor[]>> factors = new ArrayList<>();

    public ChannelSelection(Backend be, SvdPredictor predictor, SparsityConfig.Resolved sparsity) {
        this.be = be;
        this.cfg = predictor.config();
        this.sparsity = sparsity;
        this.rank = predictor.rank();
        DType ct = be.computeType();
        for (int layer = 0; layer < cfg.numLayers(); layer++) {
            EnumMap<SvdPredictor.Proj, Tensor[]> m = new EnumMap<>(SvdPredictor.Proj.class);
            for (SvdPredictor.Proj p : SvdPredictor.Proj.values()) {
                boolean needed = p.mlp() ? sparsity.mlpSparse(layer) : sparsity.attentionSparse(layer);
                if (!needed) continue;
                LowRankSvd.Factors f = predictor.get(layer, p);
                if (f == null)
                    throw new IllegalArgumentException("the SVD predictor has no factors for " + p.key(layer)
                            + " but the sparsity config makes that layer sparse; rebuild the predictor for this config");
                m.put(p, new Tensor[] {be.fromFloats(f.p(), ct, f.in(), f.rank()), be.fromFloats(f.q(), ct, f.rank(), f.out())});
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
        try (Tensor xbar = be.empty(ct, batch, c);                 // (B,C)
             Tensor t = be.empty(ct, batch, rank);                 // (B,r)
             Tensor gate = be.empty(ct, batch, inter);             // (B,I)
             Tensor up = be.empty(ct, batch, inter);               // (B,I)
             Tensor act = be.empty(ct, batch, inter);              // (B,I)
             Tensor scores = be.empty(DType.F32, inter)) {         // (I)
            be.sequenceMean(xbar, x, keyStart, batch, seqLen);
            project(gate, t, xbar, f.get(SvdPredictor.Proj.GATE));
            project(up, t, xbar, f.get(SvdPredictor.Proj.UP));
            be.swiglu(act, gate, up);                              // a = silu(gate_est) ⊙ up_est
            be.columnNorms(scores, act);                           // ‖a[:,c]‖ over this worker's sequences
            if (exchange.workers() > 1) globalNorms(exchange, layer, "mlp", scores);
            Tensor idx = be.empty(DType.I32, sparsity.keptMlp(layer));
            be.topK(idx, scores, sparsity.keptMlp(layer));
            return idx;
        }
    }

    /** Kept attention channels; each (·) I32 ascending, owned by the caller. */
    public record AttentionChannels(Tensor q, Tensor k, Tensor v, Tensor o) {}

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
        try (Tensor t = be.empty(ct, n, rank);                        // (n,r)
             Tensor qh = be.empty(ct, n, hq * d);                      // (n,Hq·D)
             Tensor kvh = be.empty(ct, n, hkv * d);                    // (n,Hkv·D), k̂ then v̂
             Tensor qn = be.empty(DType.F32, hq * d);
             Tensor kn = be.empty(DType.F32, hkv * d);
             Tensor vn = be.empty(DType.F32, hkv * d);
             Tensor score = be.empty(DType.F32, hkv * d)) {
            project(qh, t, xs, f.get(SvdPredictor.Proj.Q));
            be.columnNorms(qn, qh);
            project(kvh, t, xs, f.get(SvdPredictor.Proj.K));
            be.columnNorms(kn, kvh);
            project(kvh, t, xs, f.get(SvdPredictor.Proj.V));
            be.columnNorms(vn, kvh);
            if (exchange.workers() > 1) globalNorms(exchange, layer, "qkv", qn, kn, vn);
            be.kvChannelScores(score, qn, kn, hkv, group, d);

            Tensor kIdx = be.empty(DType.I32, kept);
            be.topK(kIdx, score, kept);
            Tensor qIdx = be.empty(DType.I32, kept * group);
            be.expandGroupChannels(qIdx, kIdx, group, d);
            Tensor vIdx = be.empty(DType.I32, kept);
            be.topK(vIdx, vn, kept);
            Tensor oIdx = be.empty(DType.I32, kept * group);
            be.expandGroupChannels(oIdx, vIdx, group, d);
            return new AttentionChannels(qIdx, kIdx, vIdx, oIdx);
        } finally {
            if (xs != x) xs.close();
        }
    }

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

    /** out (M,out) = x (M,in) · P (in,r) · Q (r,out); t (M,r) scratch. */
    private void project(Tensor out, Tensor t, Tensor x, Tensor[] pq) {
        be.matmul(t, x, false, pq[0], false, 1f, 0f);
        be.matmul(out, t, false, pq[1], false, 1f, 0f);
    }

    /** Predictor FLOPs of one MLP selection over {@code batch} sequence means. */
    public long mlpPredictorFlops(int batch) { return FlopCount.mlpPredictor(cfg, rank, batch); }

    /** Predictor FLOPs of one attention selection over n tokens (q, k, v estimates). */
    public long attentionPredictorFlops(int tokens) { return FlopCount.attentionPredictor(cfg, rank, tokens); }

    @Override
    public void close() {
        for (EnumMap<SvdPredictor.Proj, Tensor[]> m : factors)
            for (Tensor[] pq : m.values()) { pq[0].close(); pq[1].close(); }
        factors.clear();
    }
}
