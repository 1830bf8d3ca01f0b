package org.sparselora.cuda;

import static jcuda.driver.JCudaDriver.cuMemFree;
import static jcuda.driver.JCudaDriver.cuMemcpyDtoHAsync;
import static jcuda.driver.JCudaDriver.cuMemsetD32Async;
import static jcuda.driver.JCudaDriver.cuStreamSynchronize;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.List;
import jcuda.Pointer;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * A {@link GpuBackend}'s dense algebra: GEMMs through cuBLAS ({@link Cublas}, one handle on the
 * backend's stream with a fixed workspace, so captured graphs never ask it to allocate), the
 * skinny kernel for the predictor's small products, and the elementwise axpy/scale/mul and the sum
 * of squares.
 *
 * <p><b>GEMM dtype policy.</b> F32×F32 operands run an exact fp32 GEMM (into an F32 C). Every
 * other combination runs bf16×bf16 with fp32 accumulation into C (F32 or BF16): an F32 operand
 * that meets a bf16 one (a LoRA master weight against bf16 activations) is rounded to bf16 into
 * scratch first (LoRA factors are small, so this costs little), which is what mixed-precision
 * training does with fp32 masters.
 */
final class GpuBlas extends GpuOps {
    private static final long CUBLAS_WORKSPACE = 32L << 20;

    private final DevPtr cublasWorkspace;
    private final Cublas cublas;

    GpuBlas(GpuBackend owner, GpuDevice dev, GpuMemory memory) {
        super(owner, dev);
        cublasWorkspace = memory.alloc(CUBLAS_WORKSPACE);
        cublas = new Cublas(stream.address(), cublasWorkspace.address(), CUBLAS_WORKSPACE);
    }

    private static int cudaType(DType t) {
        return switch (t) {
            case F32 -> Cublas.R_32F;
            case BF16 -> Cublas.R_16BF;
            case F16 -> Cublas.R_16F;
            case I32 -> throw new IllegalArgumentException("matmul: I32 tensors cannot be multiplied");
        };
    }

    void matmul(Tensor c, Tensor a, boolean transA, Tensor b, boolean transB, float alpha, float beta) {
        bind();
        GpuTensor C = own(c), A = own(a), B = own(b);
        if (A.rank() != 2 || B.rank() != 2 || C.rank() != 2)
            throw new IllegalArgumentException("matmul needs 2-D tensors: C " + C + ", A " + A + ", B " + B);
        int M = transA ? A.dim(1) : A.dim(0), K = transA ? A.dim(0) : A.dim(1);
        int KB = transB ? B.dim(1) : B.dim(0), N = transB ? B.dim(0) : B.dim(1);
        if (K != KB || C.dim(0) != M || C.dim(1) != N)
            throw new IllegalArgumentException("matmul shapes disagree: C " + C + " = op(A " + A + (transA ? ")ᵀ" : ")") + " · op(B " + B + (transB ? ")ᵀ" : ")"));
        if (C.dtype() != DType.F32 && C.dtype() != owner.computeType() && C.dtype() != DType.F16)
            throw new IllegalArgumentException("matmul: C must be F32 or " + owner.computeType() + ", got " + C);
        if (M == 0 || N == 0) return;
        if (K == 0) { // C = beta·C
            if (beta == 0f) owner.fill(C, 0f); else if (beta != 1f) scale(C, beta);
            return;
        }
        long aAddr = A.address(), bAddr = B.address();
        DType aT = A.dtype(), bT = B.dtype();
        boolean fp32 = aT == DType.F32 && bT == DType.F32 && C.dtype() == DType.F32;
        if (!fp32) {  // policy: everything else is bf16 × bf16 (f16 × f16 stays f16)
            if (aT != bT || aT == DType.F32) {
                DType target = (aT == DType.F16 || bT == DType.F16) ? DType.F16 : DType.BF16;
                if (aT != target) { aAddr = convertToScratch("matmul.a", A, target); aT = target; }
                if (bT != target) { bAddr = convertToScratch("matmul.b", B, target); bT = target; }
            }
        }
        // Row-major C = op(A)·op(B)  <=>  column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands.
        cublas.gemm(transB ? Cublas.OP_T : Cublas.OP_N, transA ? Cublas.OP_T : Cublas.OP_N, N, M, K, alpha,
                bAddr, cudaType(bT), B.dim(1), aAddr, cudaType(aT), A.dim(1), beta, C.address(), cudaType(C.dtype()), N);
    }

    /**
     * One cuBLAS strided-batched GEMM over the row blocks (B broadcast with stride 0) when a and b share
     * a GEMM dtype (bf16 or f32 with an F32 c); other combinations take the per-block default, whose
     * matmul converts operands.
     */
    boolean matmulRowBlocks(Tensor c, int cOff, int cStride, Tensor a, int aOff, int aStride, Tensor b, boolean transB,
                            int blocks, int m, float alpha, float beta) {
        bind();
        GpuTensor C = own(c), A = own(a), B = own(b);
        if (A.rank() != 2 || B.rank() != 2 || C.rank() != 2)
            throw new IllegalArgumentException("matmulRowBlocks needs 2-D tensors: C " + C + ", A " + A + ", B " + B);
        int K = A.dim(1), KB = transB ? B.dim(1) : B.dim(0), N = transB ? B.dim(0) : B.dim(1);
        if (K != KB || C.dim(1) != N)
            throw new IllegalArgumentException("matmulRowBlocks shapes disagree: C " + C + " = A " + A + " · op(B " + B + (transB ? ")ᵀ" : ")"));
        if (blocks < 0 || m < 0 || cStride < 0 || aStride < 0 || aOff < 0 || cOff < 0
                || (blocks > 0 && m > 0 && ((long) aOff + (long) (blocks - 1) * aStride + m > A.dim(0)
                                            || (long) cOff + (long) (blocks - 1) * cStride + m > C.dim(0))))
            throw new IllegalArgumentException("matmulRowBlocks: " + blocks + " blocks of " + m + " rows (A from " + aOff + " step " + aStride
                    + ", C from " + cOff + " step " + cStride + ") outside A " + A + " or C " + C);
        if (blocks == 0 || m == 0 || N == 0) return true;
        DType aT = A.dtype(), bT = B.dtype(), cT = C.dtype();
        boolean direct = K > 0 && aT == bT && (aT == owner.computeType() && (cT == owner.computeType() || cT == DType.F32)
                                               || aT == DType.F32 && cT == DType.F32);
        if (!direct || blocks == 1) {
            return false;
        }
        long aAddr = A.address() + (long) aOff * K * aT.bytes, cAddr = C.address() + (long) cOff * N * cT.bytes;
        gemmBatched(false, transB, m, N, K, alpha, aAddr, aT, K, (long) aStride * K, B.address(), bT, B.dim(1), 0L,
                beta, cAddr, cT, N, (long) cStride * N, blocks);
        return true;
    }

    /**
     * One cuBLAS strided-batched GEMM (A broadcast with stride 0) when the right operands and the
     * outputs are equally spaced, non-overlapping blocks of memory with one shape and dtype each (the
     * predictor stacks its factors that way); otherwise the per-product default.
     */
    boolean matmulSharedA(Tensor[] outs, Tensor a, Tensor[] bs) {
        bind();
        if (outs.length != bs.length)
            throw new IllegalArgumentException("matmulSharedA: " + outs.length + " outputs for " + bs.length + " right operands");
        int count = outs.length;
        GpuTensor A = own(a);
        boolean batched = count >= 2 && A.rank() == 2;
        GpuTensor[] O = new GpuTensor[count], B = new GpuTensor[count];
        for (int i = 0; i < count; i++) { O[i] = own(outs[i]); B[i] = own(bs[i]); }
        int M = batched ? A.dim(0) : 0, K = batched ? A.dim(1) : 0, N = batched && B[0].rank() == 2 ? B[0].dim(1) : -1;
        DType aT = A.dtype(), bT = B[0].dtype(), cT = O[0].dtype();
        batched &= M > 0 && K > 0 && N > 0 && aT == bT && (aT == owner.computeType() && (cT == owner.computeType() || cT == DType.F32)
                                                            || aT == DType.F32 && cT == DType.F32);
        long bStride = batched ? B[1].address() - B[0].address() : 0, cStride = batched ? O[1].address() - O[0].address() : 0;
        batched &= bStride >= (long) K * N * bT.bytes && bStride % bT.bytes == 0 && cStride >= (long) M * N * cT.bytes && cStride % cT.bytes == 0;
        for (int i = 0; batched && i < count; i++)
            batched = B[i].rank() == 2 && B[i].dim(0) == K && B[i].dim(1) == N && B[i].dtype() == bT
                    && O[i].rank() == 2 && O[i].dim(0) == M && O[i].dim(1) == N && O[i].dtype() == cT
                    && B[i].address() == B[0].address() + i * bStride && O[i].address() == O[0].address() + i * cStride;
        if (!batched) return false;
        String skinny = skinnyKernel(M, N, aT, cT);
        boolean skinnyOk = skinny != null && aligned(A) && aligned(B[0]) && aligned(O[0])
                && (bStride / bT.bytes) % 8 == 0 && (cStride / cT.bytes) % 8 == 0;
        if (skinnyOk) {
            launch(skinny, M, count, 256, 0, new Kernels.Args().ptr(O[0].address()).ptr(A.address()).ptr(B[0].address())
                    .i(K).i(N).l(bStride / bT.bytes).l(cStride / cT.bytes));
            return true;
        }
        gemmBatched(false, false, M, N, K, 1f, A.address(), aT, K, 0L, B[0].address(), bT, N, bStride / bT.bytes,
                0f, O[0].address(), cT, N, cStride / cT.bytes, count);
        return true;
    }

    /**
     * The skinny_shared_a kernel for an (M, K)·(K, N) product set, or null where it does not apply:
     * M ≤ 32 rows (the predictor's per-sequence means), N ≤ 32 columns in groups of 8 (its rank), bf16
     * operands into a bf16 or f32 output, or f32 throughout.
     */
    private static String skinnyKernel(int M, int N, DType abType, DType cType) {
        if (M > 32 || N > 32 || N % 8 != 0) return null;
        if (abType == DType.BF16 && cType == DType.BF16) return "skinny_shared_a_bf16_bf16";
        if (abType == DType.BF16 && cType == DType.F32) return "skinny_shared_a_f32_bf16";
        if (abType == DType.F32 && cType == DType.F32) return "skinny_shared_a_f32_f32";
        return null;
    }

    private long convertToScratch(String key, GpuTensor src, DType target) {
        if (target == DType.F16) throw new IllegalArgumentException("matmul: mixing F16 with other dtypes is not supported (" + src + ")");
        long addr = scratch(key, src.numel() * target.bytes);
        GpuTensor tmp = new GpuTensor(owner, target, src.shape(), new DevPtr().plus(addr), null);
        owner.copy(tmp, src);
        return addr;
    }

    /** Row-major strided-batched C_i = alpha·op(A_i)·op(B_i) + beta·C_i; lds and strides in elements. */
    void gemmBatched(boolean transA, boolean transB, int M, int N, int K, float alpha,
                     long A, DType aT, int lda, long strideA, long B, DType bT, int ldb, long strideB,
                     float beta, long C, DType cT, int ldc, long strideC, int batch) {
        cublas.gemmBatched(transB ? Cublas.OP_T : Cublas.OP_N, transA ? Cublas.OP_T : Cublas.OP_N, N, M, K, alpha,
                B, cudaType(bT), ldb, strideB, A, cudaType(aT), lda, strideA, beta, C, cudaType(cT), ldc, strideC, batch);
    }

    void axpy(Tensor y, float alpha, Tensor x) {
        bind();
        GpuTensor Y = own(y), X = own(x);
        sameCount("axpy", Y, X);
        if (Y.numel() == 0) return;
        elementwise("axpy_" + sfx(Y, "axpy") + "_" + sfx(X, "axpy"), Y.numel(), aligned(Y, X),
                a -> a.ptr(Y.address()).f(alpha).ptr(X.address()));
    }

    void scale(Tensor t, float s) {
        bind();
        GpuTensor T = own(t);
        if (T.numel() == 0) return;
        elementwise("scale_" + sfx(T, "scale"), T.numel(), aligned(T), a -> a.ptr(T.address()).f(s));
    }

    void mul(Tensor out, Tensor a, Tensor b) {
        bind();
        GpuTensor O = own(out), A = own(a), B = own(b);
        sameCount("mul", O, A);
        sameCount("mul", O, B);
        if (O.numel() == 0) return;
        elementwise("mul_" + sfx(O, "mul") + "_" + sfx(A, "mul") + "_" + sfx(B, "mul"), O.numel(), aligned(O, A, B),
                x -> x.ptr(O.address()).ptr(A.address()).ptr(B.address()));
    }

    double sumOfSquares(List<Tensor> tensors) {
        bind();
        noCapture("sumOfSquares");
        long acc = scratch("sumsq", 8);
        cuMemsetD32Async(new DevPtr().plus(acc), 0, 2, stream);
        for (Tensor t : tensors) {
            GpuTensor T = own(t);
            if (T.numel() == 0) continue;
            elementwise("sumsq_" + sfx(T, "sumOfSquares"), T.numel(), aligned(T), a -> a.ptr(acc).ptr(T.address()));
        }
        ByteBuffer buf = ByteBuffer.allocateDirect(8).order(ByteOrder.LITTLE_ENDIAN);
        cuMemcpyDtoHAsync(Pointer.to(buf), new DevPtr().plus(acc), 8, stream);
        cuStreamSynchronize(stream);
        return buf.getDouble(0);
    }

    /** Destroys the cuBLAS handle, then frees its workspace. */
    void close() {
        cublas.close();
        cuMemFree(cublasWorkspace);
    }
}
