package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.AdamwGroup;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.io.Dtypes;

/**
 * GpuBackend's AdamW against CpuBackend: the one-tensor update and the fused multi-tensor group
 * (eager, replayed from a graph, clipped on the device). See {@link GpuOpsTestSupport} for the
 * method and tolerances.
 */
@Tag("gpu")
class GpuOptimizerTest extends GpuOpsTestSupport {
    @Test
    void adamwSingle() {
        int n = 3000;
        float[] p = rand(n, 1f), gr = rand(n, 1f), m = rand(n, 0.1f), v = new float[n];
        for (int i = 0; i < n; i++) v[i] = Math.abs(rand(1, 0.01f)[0]);
        Pair P = inout(p, DType.F32, n), G = pair(gr, DType.F32, n), M = inout(m, DType.F32, n), Vv = inout(v, DType.F32, n);
        for (int step = 1; step <= 3; step++) {
            gpu.adamw(P.g, G.g, M.g, Vv.g, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step, 0.5f);
            cpu.adamw(P.c, G.c, M.c, Vv.c, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step, 0.5f);
        }
        close("adamw param", P, F32_TOL);
        close("adamw m", M, F32_TOL);
        close("adamw v", Vv, F32_TOL);
    }

    /**
     * The fused multi-tensor group (sumsq_multi, adamw_multi) against CpuBackend's per-tensor ops,
     * over 320 tensors of mixed sizes: LoRA-like shapes from 1 element to several tiles, sizes that
     * are not a multiple of 4 and a tensor seen through an unaligned view (the scalar path), empty
     * tensors, bf16 / f32 compute copies and a copy that is the parameter itself. Three steps with
     * fresh gradients; after each: the sum of squares (1e-6 relative: the GPU sums ≤ 16
     * squares per thread in fp32 before going to double, the CPU every square in double) and bit
     * for bit the same when asked twice, params, moments and copies (adamw tolerances; copies bf16),
     * gradients exactly zero (or untouched when not asked to zero).
     */
    @Test
    void adamwGroupMatchesCpuOverManyTensors() {
        List<Pair[]> pairs = new ArrayList<>();
        List<Tensor[]> gs = new ArrayList<>(), cs = new ArrayList<>();
        List<Tensor> parents = new ArrayList<>();
        int[][] lora = {{8, 64}, {64, 8}, {8, 48}, {16, 8}};
        for (int i = 0; i < 320; i++) {
            int[] shape = switch (i % 10) {
                case 0, 1, 2, 3 -> lora[i % 4];
                case 4 -> new int[] {1 + RNG.nextInt(7)};                  // tiny, often not a multiple of 4
                case 5 -> new int[] {3, 4097 + RNG.nextInt(50)};            // several tiles, ragged tail
                case 6 -> new int[] {0, 8};                                 // empty
                case 7 -> new int[] {4, 1024};                              // exactly one tile
                case 8 -> new int[] {2 + RNG.nextInt(30), 33};
                default -> new int[] {32, 256};                             // two tiles
            };
            int n = 1;
            for (int d : shape) n *= d;
            float[] v = rand(n, 0.01f);
            for (int j = 0; j < n; j++) v[j] = Math.abs(v[j]);
            Pair P = inout(rand(n, 1f), DType.F32, shape), G = pair(rand(n, 1f), DType.F32, shape);
            Pair M = inout(rand(n, 0.1f), DType.F32, shape), V = inout(v, DType.F32, shape);
            if (i == 17) {  // an fp32 param inside a larger buffer at an odd offset: unaligned, scalar path
                Tensor big = gpu.empty(DType.F32, n + 1);
                gpu.copyFromHost(big, concat(new float[] {Float.NaN}, cpu.toFloats(P.c())));
                parents.add(big);
                P.g().close();
                P = new Pair(big.view(1, shape), P.c());
            }
            Pair C = null;
            Tensor gc = null, cc = null;
            switch (i % 3) {
                case 0 -> { C = out(DType.BF16, shape); gc = C.g(); cc = C.c(); }
                case 1 -> { if (i % 2 == 0) { C = out(DType.F32, shape); gc = C.g(); cc = C.c(); } }
                default -> { gc = P.g(); cc = P.c(); }  // the param is its own compute copy
            }
            pairs.add(new Pair[] {P, G, M, V, C});
            gs.add(gc == null ? new Tensor[] {P.g(), G.g(), M.g(), V.g()} : new Tensor[] {P.g(), G.g(), M.g(), V.g(), gc});
            cs.add(cc == null ? new Tensor[] {P.c(), G.c(), M.c(), V.c()} : new Tensor[] {P.c(), G.c(), M.c(), V.c(), cc});
        }
        try (AdamwGroup group = gpu.adamwGroup(gs); AdamwGroup ref = cpu.adamwGroup(cs)) {
            assertEquals(320, group.size());
            for (int step = 1; step <= 3; step++) {
                double want = ref.gradSumOfSquares(), got = group.gradSumOfSquares();
                System.out.printf("  adamw group step %d: sum of squares gpu %.12e cpu %.12e%n", step, got, want);
                assertEquals(want, got, 1e-6 * want, "sum of squares, step " + step);
                assertEquals(got, group.gradSumOfSquares(), "the same gradients give the same bits");
                boolean zero = step != 2;
                group.step(2e-3f * step, 0.9f, 0.95f, 1e-6f, 0.01f, step, 0.7f / step, zero);
                ref.step(2e-3f * step, 0.9f, 0.95f, 1e-6f, 0.01f, step, 0.7f / step, zero);
                String[] role = {"param", "grad", "m", "v", "copy"};
                double[] worst = new double[5];
                for (int i = 0; i < pairs.size(); i++) {
                    Pair[] sl = pairs.get(i);
                    if (sl[0].g().numel() == 0) continue;
                    for (int j : new int[] {0, 2, 3, 4}) {
                        if (sl[j] == null) continue;
                        float[] gv = gpu.toFloats(sl[j].g()), cv = cpu.toFloats(sl[j].c());
                        double e = relErr(gv, cv), tol = sl[j].g().dtype() == DType.BF16 ? BF16_TOL : F32_TOL;
                        worst[j] = Math.max(worst[j], e);
                        assertTrue(e <= tol, "step " + step + " slot " + i + " " + role[j] + ": relative error " + e + " > " + tol + firstBad(gv, cv));
                    }
                    if (sl[4] != null && sl[4].g().dtype() == DType.BF16) {  // exactly the bf16 rounding of the GPU's param
                        float[] pv = gpu.toFloats(sl[0].g()), cv = gpu.toFloats(sl[4].g());
                        for (int e = 0; e < pv.length; e++)
                            assertEquals(Dtypes.bf16ToFloat(Dtypes.floatToBf16(pv[e])), cv[e], "slot " + i + " copy[" + e + "]");
                    }
                    float[] gg = gpu.toFloats(sl[1].g()), cg = cpu.toFloats(sl[1].c());
                    assertArrayEquals(cg, gg, "step " + step + " slot " + i + " grad " + (zero ? "zeroed" : "kept"));
                    if (zero) for (float x : gg) assertEquals(0f, x, "slot " + i + " grad zeroed");
                }
                System.out.printf("  adamw group step %d: worst rel err param %.2e m %.2e v %.2e copy %.2e%n", step, worst[0], worst[2], worst[3], worst[4]);
                // fresh gradients for the next step, the same on both sides
                for (Pair[] s : pairs) {
                    float[] ng = rand((int) s[1].g().numel(), 1f);
                    gpu.copyFromHost(s[1].g(), ng);
                    cpu.copyFromHost(s[1].c(), ng);
                }
            }
            // the unaligned view's neighbour is untouched
            assertTrue(Float.isNaN(gpu.toFloats(parents.get(0))[0]), "the element before the view stays as it was");
        } finally {
            for (Pair[] s : pairs) for (Pair p : s) if (p != null) { p.g().close(); p.c().close(); }
            for (Tensor t : parents) t.close();
        }
    }

    @Test
    void adamwGroupRejectsBadSlotsNamingTheSlot() {
        Tensor p = gpu.zeros(DType.F32, 4, 8), g = gpu.zeros(DType.F32, 4, 8), m = gpu.zeros(DType.F32, 4, 8), v = gpu.zeros(DType.F32, 4, 8);
        List<Tensor[]> slots = new ArrayList<>();
        slots.add(new Tensor[] {p, g, m, v});
        slots.add(new Tensor[] {p, g, gpu.zeros(DType.BF16, 4, 8), v});
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> gpu.adamwGroup(slots));
        assertTrue(e.getMessage().contains("slot 1") && e.getMessage().contains("m must be F32"), e.getMessage());
        slots.set(1, new Tensor[] {p, g, m, cpu.zeros(DType.F32, 4, 8)});
        e = assertThrows(IllegalArgumentException.class, () -> gpu.adamwGroup(slots));
        assertTrue(e.getMessage().contains("slot 1") && e.getMessage().contains("belongs to backend cpu"), e.getMessage());
        try (AdamwGroup empty = gpu.adamwGroup(List.of())) {
            assertEquals(0.0, empty.gradSumOfSquares());
            empty.step(1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1, 1f, true);
        }
    }

    /**
     * The decay mask (full-parameter training decays matrices only): a masked fused group — eager
     * steps and a recorded clippedStep replayed — equals the per-tensor loop with weight decay 0 on
     * the masked-out slots (AdamW tolerance), over the float4 and the scalar path and an empty slot;
     * a wrong-length mask is refused.
     */
    @Test
    void adamwGroupDecayMaskChoosesWeightDecayPerSlot() {
        int[] sizes = {4096 + 512, 10, 0, 520, 7};
        boolean[] decays = {true, false, false, false, true};
        List<Tensor[]> gs = new ArrayList<>(), cs = new ArrayList<>();
        List<Pair> params = new ArrayList<>();
        for (int n : sizes) {
            Pair P = inout(rand(n, 1f), DType.F32, n), G = pair(rand(n, 1f), DType.F32, n);
            Pair M = inout(new float[n], DType.F32, n), V = inout(new float[n], DType.F32, n);
            gs.add(new Tensor[] {P.g, G.g, M.g, V.g});
            cs.add(new Tensor[] {P.c, G.c, M.c, V.c});
            params.add(P);
        }
        try (AdamwGroup group = gpu.adamwGroup(gs)) {
            assertThrows(IllegalArgumentException.class, () -> group.setDecayMask(new boolean[] {true}));
            group.setDecayMask(decays);
            for (int step = 1; step <= 2; step++) {
                group.step(1e-2f, 0.9f, 0.999f, 1e-8f, 0.3f, step, 0.5f, false);
                for (int i = 0; i < sizes.length; i++) {
                    Tensor[] c = cs.get(i);
                    cpu.adamw(c[0], c[1], c[2], c[3], 1e-2f, 0.9f, 0.999f, 1e-8f, decays[i] ? 0.3f : 0f, step, 0.5f);
                }
            }
            for (int i = 0; i < sizes.length; i++) close("masked group param " + i + (decays[i] ? " (decays)" : " (no decay)"), params.get(i), F32_TOL);
            // the recorded, clipped update reads the same table: clipping off, gs = invTokens = 0.5
            Tensor hyper = gpu.fromFloats(new float[] {1e-2f, (float) (1 - Math.pow(0.9, 3)), (float) (1 - Math.pow(0.999, 3)), 0.5f, 0f}, DType.F32, 5);
            gpu.synchronize();
            gpu.beginCapture();
            group.clippedStep(hyper, 0.9f, 0.999f, 1e-8f, 0.3f, false);
            GpuBackend.Graph graph = gpu.endCapture();
            graph.replay();
            graph.close();
            hyper.close();
            for (int i = 0; i < sizes.length; i++) {
                Tensor[] c = cs.get(i);
                cpu.adamw(c[0], c[1], c[2], c[3], 1e-2f, 0.9f, 0.999f, 1e-8f, decays[i] ? 0.3f : 0f, 3, 0.5f);
            }
            for (int i = 0; i < sizes.length; i++) close("masked clippedStep param " + i, params.get(i), F32_TOL);
        }
    }

    /** The group's step needs no host value, so it can sit in a CUDA graph; its sum of squares (a read) refuses to. */
    @Test
    void adamwGroupStepReplaysFromAGraph() {
        List<Tensor[]> gs = new ArrayList<>(), cs = new ArrayList<>();
        List<Pair> ps = new ArrayList<>();
        for (int n : new int[] {4096 * 3, 10, 520}) {
            Pair P = inout(rand(n, 1f), DType.F32, n), G = pair(rand(n, 1f), DType.F32, n);
            Pair M = inout(new float[n], DType.F32, n), V = inout(new float[n], DType.F32, n), C = out(DType.BF16, n);
            gs.add(new Tensor[] {P.g, G.g, M.g, V.g, C.g});
            cs.add(new Tensor[] {P.c, G.c, M.c, V.c, C.c});
            ps.add(P);
            ps.add(C);
        }
        try (AdamwGroup group = gpu.adamwGroup(gs); AdamwGroup ref = cpu.adamwGroup(cs)) {
            gpu.synchronize();
            gpu.beginCapture();
            group.step(1e-2f, 0.9f, 0.99f, 1e-8f, 0f, 1, 0.5f, false);
            assertThrows(IllegalStateException.class, group::gradSumOfSquares, "the sum of squares reads to the host: not in a capture");
            GpuBackend.Graph graph = gpu.endCapture();
            for (int r = 0; r < 2; r++) {
                graph.replay();
                ref.step(1e-2f, 0.9f, 0.99f, 1e-8f, 0f, 1, 0.5f, false);
            }
            graph.close();
            for (int i = 0; i < ps.size(); i++) close("graph-replayed group step, " + (i % 2 == 0 ? "param" : "bf16 copy") + " " + i / 2, ps.get(i), i % 2 == 0 ? F32_TOL : BF16_TOL);
        }
    }

    /**
     * The recordable update (clippedStep: Σg², clipping and AdamW with the step's scalars read from a
     * device tensor) recorded once and replayed over three steps with new gradients, lr and bias
     * corrections, clipping on and off, against the host path on an identical group
     * (gradSumOfSquares, the trainer's clip arithmetic, step): the same bits.
     */
    @Test
    void adamwGroupClippedStepOnTheDeviceEqualsTheHostClipBitForBit() {
        for (float maxNorm : new float[] {0f, 0.5f, 1e9f}) {
            List<Tensor[]> a = new ArrayList<>(), b = new ArrayList<>();
            List<Tensor> ga = new ArrayList<>(), gb = new ArrayList<>(), pa = new ArrayList<>(), pb = new ArrayList<>();
            for (int n : new int[] {4096 * 3, 10, 520}) {
                float[] p0 = rand(n, 1f);
                Tensor[] sa = {gpu.fromFloats(p0, DType.F32, n), gpu.zeros(DType.F32, n), gpu.zeros(DType.F32, n), gpu.zeros(DType.F32, n), gpu.empty(DType.BF16, n)};
                Tensor[] sb = {gpu.fromFloats(p0, DType.F32, n), gpu.zeros(DType.F32, n), gpu.zeros(DType.F32, n), gpu.zeros(DType.F32, n), gpu.empty(DType.BF16, n)};
                a.add(sa); b.add(sb); ga.add(sa[1]); gb.add(sb[1]); pa.add(sa[0]); pb.add(sb[0]);
            }
            Tensor hyper = gpu.empty(DType.F32, 5);
            try (AdamwGroup recorded = gpu.adamwGroup(a); AdamwGroup host = gpu.adamwGroup(b)) {
                assertTrue(recorded.canClipOnDevice());
                GpuBackend.Graph graph = null;
                for (int step = 1; step <= 3; step++) {
                    for (int i = 0; i < ga.size(); i++) {
                        float[] g = rand((int) ga.get(i).numel(), 3f);
                        gpu.copyFromHost(ga.get(i), g);
                        gpu.copyFromHost(gb.get(i), g);
                    }
                    float inv = 1f / (100 + step), lr = 1e-2f / step;
                    float bc1 = (float) (1 - Math.pow(0.9f, step)), bc2 = (float) (1 - Math.pow(0.99f, step));   // as the trainer: float betas
                    gpu.copyFromHost(hyper, new float[] {lr, bc1, bc2, inv, maxNorm});
                    if (graph == null) {
                        gpu.beginCapture();
                        recorded.clippedStep(hyper, 0.9f, 0.99f, 1e-8f, 0.01f, true);
                        graph = gpu.endCapture();
                    }
                    graph.replay();
                    double ss = host.gradSumOfSquares(), norm = Math.sqrt(ss) * inv;
                    float scale = inv;
                    if (maxNorm > 0 && norm > maxNorm) scale *= (float) (maxNorm / (norm + 1e-6));
                    host.step(lr, 0.9f, 0.99f, 1e-8f, 0.01f, step, scale, true);
                    assertEquals(ss, recorded.lastSumOfSquares(), "step " + step + ": the same Σg²");
                }
                graph.close();
                for (int i = 0; i < pa.size(); i++) {
                    assertArrayEquals(gpu.toFloats(pb.get(i)), gpu.toFloats(pa.get(i)), "max norm " + maxNorm + ", tensor " + i + ": same bits");
                    assertArrayEquals(gpu.toFloats(a.get(i)[4]), gpu.toFloats(b.get(i)[4]), "bf16 copy " + i);
                    assertArrayEquals(new float[(int) ga.get(i).numel()], gpu.toFloats(ga.get(i)), "gradients zeroed");
                }
            }
            hyper.close();
            for (List<Tensor[]> l : List.of(a, b)) for (Tensor[] s5 : l) for (Tensor t : s5) t.close();
        }
    }

    static float[] concat(float[] a, float[] b) {
        float[] r = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }
}
