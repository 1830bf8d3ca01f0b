package org.sparselora.cuda;

import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * A {@link GpuBackend}'s QLoRA dequantization (kernels in quant.cu): a whole NF4 projection into the
 * compute-type scratch the GEMMs read, and the kept rows or columns of one (SparseLoRA's slices)
 * straight from the codes. The format is the engine's {@code Nf4}; the results equal its host
 * reference up to the store's rounding to bf16.
 */
final class GpuQuant extends GpuOps {
    GpuQuant(GpuBackend owner, GpuDevice dev) { super(owner, dev); }

    private static void needCodes(String op, GpuTensor packed, GpuTensor absmax, long numel) {
        needI32(op, "packed", packed);
        if (absmax.dtype() != DType.F32) throw new IllegalArgumentException(op + ": absmax must be F32, got " + absmax.dtype());
        if (packed.numel() < (numel + 7) / 8 || absmax.numel() < (numel + 63) / 64)
            throw new IllegalArgumentException(op + ": packed " + Tensor.describe(packed) + " / absmax " + Tensor.describe(absmax)
                    + " hold fewer than " + numel + " NF4 weights");
    }

    void dequantize(Tensor out, Tensor packed, Tensor absmax) {
        bind();
        GpuTensor O = own(out), P = own(packed), A = own(absmax);
        long n = O.numel();
        needCodes("dequantizeNf4", P, A, n);
        if (n == 0) return;
        long words = (n + 7) / 8;
        launch("nf4_dequant_" + sfx(O, "dequantizeNf4"), (int) Math.max(1, Math.min(SM_BLOCKS, (words + 255) / 256)), 1, 256, 0,
                new Kernels.Args().ptr(O.address()).ptr(P.address()).ptr(A.address()).l(n));
    }

    void dequantizeRows(Tensor out, Tensor packed, Tensor absmax, Tensor rows, int cols) {
        bind();
        GpuTensor O = own(out), P = own(packed), A = own(absmax), I = own(rows);
        needI32("dequantizeNf4Rows", "rows", I);
        int k = (int) I.numel();
        needNumel("dequantizeNf4Rows", "out", O, (long) k * cols);
        if (k == 0 || cols == 0) return;
        launch("nf4_dequant_rows_" + sfx(O, "dequantizeNf4Rows"), (int) Math.min(SM_BLOCKS * 4L, k), 1, rowThreads(cols, 256), 0,
                new Kernels.Args().ptr(O.address()).ptr(P.address()).ptr(A.address()).ptr(I.address()).i(k).i(cols));
    }

    void dequantizeCols(Tensor out, Tensor packed, Tensor absmax, Tensor cols, int C) {
        bind();
        GpuTensor O = own(out), P = own(packed), A = own(absmax), I = own(cols);
        needI32("dequantizeNf4Cols", "cols", I);
        int k = (int) I.numel(), R = O.dim(0);
        needNumel("dequantizeNf4Cols", "out", O, (long) R * k);
        needCodes("dequantizeNf4Cols", P, A, (long) R * C);
        if (k == 0 || R == 0) return;
        launch("nf4_dequant_cols_" + sfx(O, "dequantizeNf4Cols"), (int) Math.min(SM_BLOCKS * 4L, R), 1, rowThreads(k, 256), 0,
                new Kernels.Args().ptr(O.address()).ptr(P.address()).ptr(A.address()).ptr(I.address()).i(R).i(C).i(k));
    }
}
