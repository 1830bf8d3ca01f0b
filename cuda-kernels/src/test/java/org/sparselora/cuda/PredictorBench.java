package org.sparselora.cuda;

import java.util.Locale;
import java.util.SplittableRandom;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.sparse.ChannelSelection;
import org.sparselora.engine.sparse.SparsityConfig;
import org.sparselora.engine.sparse.SvdPredictor;

/**
 * Device time of the SparseLoRA predictor's ops at the Llama-3-8B shape (batch 8 × 512, rank 8,
 * llama3-8b-math10k: MLP keeps 143 of 14336, attention 256 of 1024 per KV row), each op in its old
 * form ({@link DevKernels}) and its new one (the backend's), then whole selectMlp / selectAttention
 * calls of {@link ChannelSelection} (new kernels: the backend runs no others). Each row
 * is the op captured 20 times into one CUDA graph and replayed (mean µs per op over 5 replays): the
 * GPU's time, free of the 4–10 µs Java launch cost that a back-to-back eager loop would measure for
 * kernels this small (the step the lead captures into a graph, and an eager step whose GPU is the
 * bottleneck, both pay the device time). The eager figure is printed beside it. Not a test: run by
 * {@code benchmarks/gpu/predictor-run.sh} as a plain main.
 */
public final class PredictorBench {
    private static final SplittableRandom RNG = new SplittableRandom(7);

    public static void main(String[] args) {
        try (GpuBackend g = BenchSupport.open("PredictorBench")) {
            int B = 8, T = 512, N = B * T, C = 4096, I = 14336, Hq = 32, Hkv = 8, D = 128, r = 8;
            System.out.println("PredictorBench on " + g.deviceName() + ", N=" + N + " tokens, rank " + r);
            System.out.printf(Locale.ROOT, "%-58s %10s %10s%n", "op", "graph us", "eager us");
            Tensor empty = g.empty(DType.F32, 1);
            row(g, "fill 1 float (launch floor)", () -> g.fill(empty, 0f));

            // ---- top-k
            Tensor sc = g.empty(DType.F32, I);
            float[] s = new float[I];
            for (int i = 0; i < I; i++) s[i] = (float) Math.abs(1 + 0.05 * RNG.nextGaussian());
            g.copyFromHost(sc, s);
            for (int k : new int[] {143, 1433, 12902}) {
                Tensor idx = g.empty(DType.I32, k);
                row(g, "topK " + k + " of 14336 topk_f32 (old)", () -> DevKernels.topK(g, idx, sc, k));
                row(g, "topK " + k + " of 14336 registers (new)", () -> g.topK(idx, sc, k));
            }
            Tensor kvs = g.empty(DType.F32, 2, Hkv * D), kvIdx = g.empty(DType.I32, 2, 256);
            float[] s2 = new float[2 * Hkv * D];
            for (int i = 0; i < s2.length; i++) s2[i] = (float) Math.abs(RNG.nextGaussian());
            g.copyFromHost(kvs, s2);
            row(g, "topKRows 2 x 256 of 1024 topk_f32 (old)", () -> DevKernels.topKRows(g, kvIdx, kvs, 256));
            row(g, "topKRows 2 x 256 of 1024 registers (new)", () -> g.topKRows(kvIdx, kvs, 256));

            // ---- low-rank norms (attention: q̂, k̂, v̂ over N tokens), stacked t as ChannelSelection has them
            Tensor tqkv = rand(g, DType.BF16, 3 * N, r);
            Tensor[] ts = {tqkv.view(0, N, r), tqkv.view((long) N * r, N, r), tqkv.view(2L * N * r, N, r)};
            Tensor[] qs = {rand(g, DType.BF16, r, Hq * D), rand(g, DType.BF16, r, Hkv * D), rand(g, DType.BF16, r, Hkv * D)};
            Tensor norms = g.empty(DType.F32, Hq * D + 2 * Hkv * D);
            Tensor[] os = {norms.view(0, Hq * D), norms.view(Hq * D, Hkv * D), norms.view(Hq * D + Hkv * D, Hkv * D)};
            row(g, "lowRankColumnNorms q,k,v N=4096 row sums", () -> DevKernels.lowRankColumnNormsRowSums(g, os, ts, qs));
            for (DevKernels.GramMode m : DevKernels.GramMode.values())
                row(g, "lowRankColumnNorms q,k,v N=4096 gram " + m, () -> m.lowRankColumnNorms(g, os, ts, qs));
            Tensor qn = norms.view(0, Hq * D), kn = norms.view(Hq * D, Hkv * D), score = g.empty(DType.F32, Hkv * D);
            row(g, "kvChannelScores", () -> g.kvChannelScores(score, qn, kn, Hkv, Hq / Hkv, D));
            Tensor qo = g.empty(DType.I32, 2, 256 * (Hq / Hkv));
            int[] kvi = new int[512];
            for (int i = 0; i < 512; i++) kvi[i] = (i % 256) * 4;
            g.copyFromHost(kvIdx, kvi);
            row(g, "expandGroupChannels x2 (old)", () -> {
                g.expandGroupChannels(qo.view(0, 1024), kvIdx.view(0, 256), Hq / Hkv, D);
                g.expandGroupChannels(qo.view(1024, 1024), kvIdx.view(256, 256), Hq / Hkv, D);
            });
            row(g, "expandGroupChannelsRows (new)", () -> g.expandGroupChannelsRows(qo, kvIdx, Hq / Hkv, D));

            // ---- the x·P GEMMs and the MLP's sequence mean and scores
            Tensor x = rand(g, DType.BF16, N, C);
            Tensor pstack = rand(g, DType.BF16, 3 * C, r);
            Tensor[] ps = {pstack.view(0, C, r), pstack.view((long) C * r, C, r), pstack.view(2L * C * r, C, r)};
            row(g, "matmulSharedA x(4096,4096)·P 3x(4096,8) batched", () -> g.matmulSharedA(ts, x, ps));
            Tensor pcat = rand(g, DType.BF16, C, 3 * r), tcat = g.empty(DType.BF16, N, 3 * r);
            row(g, "matmul x(4096,4096)·P(4096,24) one GEMM", () -> g.matmul(tcat, x, false, pcat, false, 1f, 0f));
            Tensor xbar = g.empty(DType.BF16, B, C), ks = g.zeros(DType.I32, B);
            row(g, "sequenceMean (8x512,4096) -> (8,4096)", () -> g.sequenceMean(xbar, x, ks, B, T));
            Tensor tgu = g.empty(DType.BF16, 2 * B, r);
            Tensor[] tgus = {tgu.view(0, B, r), tgu.view((long) B * r, B, r)};
            Tensor[] p01 = {ps[0], ps[1]};
            row(g, "matmulSharedA xbar(8,4096)·P 2x(4096,8) cuBLAS batched (old)", () -> DevKernels.matmulSharedACublas(g, tgus, xbar, p01));
            row(g, "matmulSharedA xbar(8,4096)·P 2x(4096,8) skinny kernel (new)", () -> g.matmulSharedA(tgus, xbar, p01));
            Tensor qg = rand(g, DType.BF16, r, I), qu = rand(g, DType.BF16, r, I), mlpScores = g.empty(DType.F32, I);
            row(g, "lowRankSwigluColumnNorms n=8 M=14336 segment kernel (old)",
                    () -> DevKernels.lowRankSwigluSegments(g, mlpScores, tgus[0], qg, tgus[1], qu));
            row(g, "lowRankSwigluColumnNorms n=8 M=14336 flat kernel (new)",
                    () -> g.lowRankSwigluColumnNorms(mlpScores, tgus[0], qg, tgus[1], qu));

            // ---- whole selections through ChannelSelection (random factors: timing only)
            LlamaConfig cfg = new LlamaConfig("LlamaForCausalLM", C, I, 32, Hq, Hkv, D, 128256, 8192, 1e-5f, 500000f, null, false, false, 128000, 128001);
            StringBuilder yaml = new StringBuilder("start_step: 0.05\nmode: svd_8\nskip_output_tokens: true\nsparsity:\n");
            for (int l = 3; l <= 30; l++) yaml.append("  layers.").append(l).append(".mlp: 0.99\n");
            for (int l : new int[] {14, 15, 16, 17, 18, 19, 21, 22, 23, 25, 26, 27, 28, 29}) yaml.append("  layers.").append(l).append(".self_attn: 0.75\n");
            SparsityConfig sc8 = SparsityConfig.parse(yaml.toString(), "llama3-8b-math10k (inline)");
            SparsityConfig.Resolved res = sc8.resolve(cfg);
            try (ChannelSelection sel = new ChannelSelection(g, SvdPredictor.randomForTiming(cfg, res, r, 11), res)) {
                Tensor xn = rand(g, DType.BF16, N, C);
                row(g, "selectMlp layer 10 (new kernels)", () -> sel.selectMlp(10, xn, ks, B, T).close());
                row(g, "selectAttention layer 21 (new kernels)", () -> sel.selectAttention(21, xn, null).close());
                double mlp = graphUs(g, () -> sel.selectMlp(10, xn, ks, B, T).close());
                double att = graphUs(g, () -> sel.selectAttention(21, xn, null).close());
                System.out.printf(Locale.ROOT, "predictor per step (28 MLP + 14 attention selections, new kernels): %.2f ms%n",
                        (28 * mlp + 14 * att) / 1e3);
            }
        }
    }

    private static Tensor rand(GpuBackend g, DType t, int... shape) { return BenchSupport.rand(g, RNG, t, shape); }

    /** Mean device µs of one op: 20 copies captured into a graph, one replay to warm, five timed. */
    private static double graphUs(GpuBackend g, Runnable op) {
        op.run();
        g.synchronize();
        int reps = 20, replays = 5;
        g.beginCapture();
        for (int i = 0; i < reps; i++) op.run();
        GpuBackend.Graph graph = g.endCapture();
        try {
            graph.replay();
            g.synchronize();
            float ms = g.timeMs(() -> { for (int i = 0; i < replays; i++) graph.replay(); });
            return ms * 1e3 / (reps * replays);
        } finally {
            graph.close();
        }
    }

    private static void row(GpuBackend g, String name, Runnable op) {
        double graph;
        try {
            graph = graphUs(g, op);
        } catch (RuntimeException e) {
            System.out.printf(Locale.ROOT, "%-58s  graph capture failed: %s%n", name, e.getMessage());
            graph = Double.NaN;
        }
        System.out.printf(Locale.ROOT, "%-58s %10.1f %10.1f%n", name, graph, BenchSupport.eagerUs(g, op, 3, 20));
    }
}
