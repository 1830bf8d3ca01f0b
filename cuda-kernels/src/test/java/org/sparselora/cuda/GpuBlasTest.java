package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.Arrays;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * GpuBackend's GEMMs against CpuBackend: every transpose and dtype combination, row-block and
 * shared-left-operand products (stacked, separate, and the skinny kernel against cuBLAS through
 * {@link DevKernels}). See {@link GpuOpsTestSupport} for the method and tolerances.
 */
@Tag("gpu")
class GpuBlasTest extends GpuOpsTestSupport {
    @Test
    void matmulAllTransposesAndDtypes() {
        int M = 96, N = 80, K = 136;
        for (boolean ta : new boolean[] {false, true}) {
            for (boolean tb : new boolean[] {false, true}) {
                float[] a = rand(M * K, 1f), b = rand(K * N, 1f), c0 = rand(M * N, 1f);
                int[] as = ta ? new int[] {K, M} : new int[] {M, K}, bs = tb ? new int[] {N, K} : new int[] {K, N};
                // bf16 x bf16 -> f32, fresh and accumulating (beta = 1: the LoRA scale-add form)
                Pair A = pair(a, DType.BF16, as), B = pair(b, DType.BF16, bs);
                Pair C = out(DType.F32, M, N);
                gpu.matmul(C.g, A.g, ta, B.g, tb, 1f, 0f);
                cpu.matmul(C.c, A.c, ta, B.c, tb, 1f, 0f);
                close("matmul bf16->f32 " + ta + "," + tb, C, 1e-5);
                Pair Cacc = inout(c0, DType.F32, M, N);
                gpu.matmul(Cacc.g, A.g, ta, B.g, tb, 2f, 1f);
                cpu.matmul(Cacc.c, A.c, ta, B.c, tb, 2f, 1f);
                close("matmul bf16 acc alpha=2 " + ta + "," + tb, Cacc, 1e-5);
                Pair Cb = out(DType.BF16, M, N);
                gpu.matmul(Cb.g, A.g, ta, B.g, tb, 1f, 0f);
                cpu.matmul(Cb.c, A.c, ta, B.c, tb, 1f, 0f);
                close("matmul bf16->bf16 " + ta + "," + tb, Cb, BF16_TOL);
                // f32 x f32 -> f32: exact fp32 GEMM
                Pair Af = pair(a, DType.F32, as), Bf = pair(b, DType.F32, bs), Cf = out(DType.F32, M, N);
                gpu.matmul(Cf.g, Af.g, ta, Bf.g, tb, 1f, 0f);
                cpu.matmul(Cf.c, Af.c, ta, Bf.c, tb, 1f, 0f);
                close("matmul f32 " + ta + "," + tb, Cf, F32_TOL);
            }
        }
        // mixed: bf16 activations x f32 LoRA master (rounded to bf16 by policy)
        float[] x = rand(64 * 128, 1f), w = bf(rand(16 * 128, 1f));
        Pair X = pair(x, DType.BF16, 64, 128), W = pair(w, DType.F32, 16, 128), Y = out(DType.BF16, 64, 16);
        gpu.matmul(Y.g, X.g, false, W.g, true, 1f, 0f);
        cpu.matmul(Y.c, X.c, false, W.c, true, 1f, 0f);
        close("matmul bf16 x f32(master) -> bf16", Y, BF16_TOL);
        assertThrows(IllegalArgumentException.class, () -> gpu.matmul(Y.g, X.g, false, W.g, false, 1f, 0f));
    }

    /**
     * matmulRowBlocks (one strided-batched GEMM, B broadcast) against the CPU's per-block matmuls:
     * blocks of full activations in place, compact operands (stride = rows), a stride-0 operand
     * (bias rows), beta 0 and 1, W transposed or not, bf16 and f32, and an F32-master B with bf16 A
     * (the per-block default with operand conversion). Rows outside the blocks must keep their values;
     * rows inside are NaN-poisoned on the GPU before a beta-0 call.
     */
    @Test
    void matmulRowBlocksInPlaceAndCompact() {
        int B = 3, T = 40, off = 29, m = 11, K = 72, N = 48;
        for (DType t : FLOATS) {
            for (boolean tb : new boolean[] {false, true}) {
                for (float beta : new float[] {0f, 1f}) {
                    float[] w = rand(K * N, 1f), base = rand(B * T * N, 1f);
                    Pair W = pair(w, t, tb ? new int[] {N, K} : new int[] {K, N});
                    Pair X = pair(rand(B * T * K, 1f), t, B * T, K), XC = pair(rand(B * m * K, 1f), t, B * m, K);
                    String what = t + " transB=" + tb + " beta=" + beta;
                    // full -> full, in place
                    Pair Y = inout(base, t, B * T, N);
                    if (beta == 0f) for (int j = 0; j < B; j++) gpu.fill(Y.g.rows(off + j * T, m), Float.NaN);
                    gpu.matmulRowBlocks(Y.g, off, T, X.g, off, T, W.g, tb, B, m, 1f, beta);
                    cpu.matmulRowBlocks(Y.c, off, T, X.c, off, T, W.c, tb, B, m, 1f, beta);
                    close("matmulRowBlocks full->full " + what, Y, tolFor(t));
                    // full -> compact, and compact -> full
                    Pair YC = out(t, B * m, N);
                    gpu.matmulRowBlocks(YC.g, 0, m, X.g, off, T, W.g, tb, B, m, 1f, 0f);
                    cpu.matmulRowBlocks(YC.c, 0, m, X.c, off, T, W.c, tb, B, m, 1f, 0f);
                    close("matmulRowBlocks full->compact " + what, YC, tolFor(t));
                    Pair Y2 = inout(base, t, B * T, N);
                    gpu.matmulRowBlocks(Y2.g, 3, T, XC.g, 0, m, W.g, tb, B, m, 2f, beta);
                    cpu.matmulRowBlocks(Y2.c, 3, T, XC.c, 0, m, W.c, tb, B, m, 2f, beta);
                    close("matmulRowBlocks compact->full alpha=2 " + what, Y2, tolFor(t));
                    // stride-0 A: the same rows for every block (the bias add through a column of ones)
                    Pair Y3 = inout(base, t, B * T, N);
                    gpu.matmulRowBlocks(Y3.g, off, T, XC.g, 0, 0, W.g, tb, B, m, 1f, 1f);
                    cpu.matmulRowBlocks(Y3.c, off, T, XC.c, 0, 0, W.c, tb, B, m, 1f, 1f);
                    close("matmulRowBlocks stride-0 A " + what, Y3, tolFor(t));
                }
            }
        }
        // bf16 activations × an F32 master weight: the per-block default, which converts the operand
        float[] x = rand(2 * 10 * 64, 1f), w = bf(rand(16 * 64, 1f));
        Pair X = pair(x, DType.BF16, 20, 64), W = pair(w, DType.F32, 16, 64), Y = inout(rand(20 * 16, 1f), DType.BF16, 20, 16);
        gpu.matmulRowBlocks(Y.g, 2, 10, X.g, 2, 10, W.g, true, 2, 6, 1f, 0f);
        cpu.matmulRowBlocks(Y.c, 2, 10, X.c, 2, 10, W.c, true, 2, 6, 1f, 0f);
        close("matmulRowBlocks bf16 x f32(master)", Y, BF16_TOL);
        assertThrows(IllegalArgumentException.class, () -> gpu.matmulRowBlocks(Y.g, 2, 10, X.g, 2, 10, W.g, true, 3, 6, 1f, 0f));
    }

    /**
     * matmulSharedA against the CPU: right operands and outputs stacked as equally spaced views of one
     * tensor each (one strided-batched GEMM, A broadcast) and as separate tensors (the per-product
     * default), bf16 and f32, 2 and 3 products (the predictor's gate/up and q/k/v first factors). Every
     * output NaN-poisoned first.
     */
    @Test
    void matmulSharedAStackedAndSeparate() {
        int M = 300, K = 96, N = 8;
        for (DType t : FLOATS) {
            for (int count : new int[] {2, 3}) {
                Pair A = pair(rand(M * K, 1f), t, M, K);
                float[] bs = rand(count * K * N, 1f);
                Pair stackB = pair(bs, t, count * K, N);
                Pair stackO = out(t, count * M, N);
                matmulSharedAStacked(stackO, A, stackB, count, M, K, N);
                close("matmulSharedA stacked " + t + " x" + count, stackO, tolFor(t));
                Pair[] sep = new Pair[count], outs = new Pair[count];
                Tensor[] bg = new Tensor[count], bc = new Tensor[count], og = new Tensor[count], oc = new Tensor[count];
                for (int i = 0; i < count; i++) {
                    sep[i] = pair(Arrays.copyOfRange(bs, i * K * N, (i + 1) * K * N), t, K, N);
                    outs[i] = out(t, M, N);
                    bg[i] = sep[i].g; bc[i] = sep[i].c; og[i] = outs[i].g; oc[i] = outs[i].c;
                }
                gpu.matmulSharedA(og, A.g, bg);
                cpu.matmulSharedA(oc, A.c, bc);
                for (int i = 0; i < count; i++) close("matmulSharedA separate " + t + " x" + count + " #" + i, outs[i], tolFor(t));
            }
        }
    }

    /**
     * matmulSharedA on the GPU and the CPU with the count right operands (K, N) and outputs (M, N)
     * equally spaced views of stackB and stackO: one strided-batched product with A broadcast.
     */
    private static void matmulSharedAStacked(Pair stackO, Pair A, Pair stackB, int count, int M, int K, int N) {
        matmulSharedAStacked(stackO, A, stackB, count, M, K, N, true);
    }

    /** As above; {@code backend} false: the GPU side through {@link DevKernels#matmulSharedACublas}. */
    private static void matmulSharedAStacked(Pair stackO, Pair A, Pair stackB, int count, int M, int K, int N, boolean backend) {
        Tensor[] bg = new Tensor[count], bc = new Tensor[count], og = new Tensor[count], oc = new Tensor[count];
        for (int i = 0; i < count; i++) {
            bg[i] = stackB.g.view((long) i * K * N, K, N); bc[i] = stackB.c.view((long) i * K * N, K, N);
            og[i] = stackO.g.view((long) i * M * N, M, N); oc[i] = stackO.c.view((long) i * M * N, M, N);
        }
        if (backend) gpu.matmulSharedA(og, A.g, bg);
        else DevKernels.matmulSharedACublas(gpu, og, A.g, bg);
        cpu.matmulSharedA(oc, A.c, bc);
    }

    /**
     * matmulSharedA with a small left operand (the MLP predictor's x̄ (B, C) times its stacked P): the
     * skinny_shared_a kernel (the backend's) and cuBLAS's batched GEMM ({@link DevKernels}) against the CPU, at the 8B shape (8 ×
     * 4096 · 2 × (4096, 8)), K not a multiple of the block (1000), one row, 32 rows, N = 16 and 24,
     * bf16 → bf16, bf16 → f32 and f32 → f32; N = 12 (not in groups of 8) and M = 33 take cuBLAS.
     */
    @Test
    void matmulSharedASmallLeftOperand() {
        int[][] mkn = {{8, 4096, 8}, {8, 1000, 8}, {1, 4096, 8}, {32, 512, 16}, {5, 300, 24}, {8, 96, 12}, {33, 96, 8}};
        DType[][] types = {{DType.BF16, DType.BF16}, {DType.BF16, DType.F32}, {DType.F32, DType.F32}};
        for (boolean skinny : new boolean[] {true, false}) {
            for (int[] s : mkn) {
                int M = s[0], K = s[1], N = s[2];
                for (DType[] tt : types) {
                    int count = 2;
                    Pair A = pair(rand(M * K, 1f), tt[0], M, K);
                    Pair stackB = pair(rand(count * K * N, 1f), tt[0], count * K, N);
                    Pair stackO = out(tt[1], count * M, N);
                    matmulSharedAStacked(stackO, A, stackB, count, M, K, N, skinny);
                    close("matmulSharedA " + (skinny ? "skinny " : "cuBLAS ") + M + "x" + K + "x" + N + " " + tt[0] + "->" + tt[1],
                            stackO, tt[1] == DType.BF16 ? BF16_TOL : (tt[0] == DType.F32 ? F32_TOL : 1e-4));
                }
            }
        }
    }
}
