package org.sparselora.cuda;

import java.lang.foreign.AddressLayout;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.util.Optional;

/**
 * cuBLAS bound through Java's FFM API (JCublas cannot load against cuBLAS 13: its native library
 * imports {@code libcublas.so.12}-versioned symbols). Owns one handle bound to the backend's stream
 * with a fixed workspace (so captured CUDA graphs never ask cuBLAS to allocate). Only the calls the
 * backend needs: GEMM and strided-batched GEMM with explicit data and compute types.
 *
 * <p>Alpha/beta are passed as host pointers (cuBLAS's default pointer mode): cuBLAS reads them when
 * the call is made, so a captured graph keeps the values of capture time.
 */
final class Cublas implements AutoCloseable {
    static final int OP_N = 0, OP_T = 1;
    static final int R_32F = 0, R_16F = 2, R_16BF = 14;
    static final int COMPUTE_32F = 68;
    static final int GEMM_DEFAULT = -1;

    private static final Linker LINKER = Linker.nativeLinker();
    private static final AddressLayout ADDR = ValueLayout.ADDRESS;
    private static final ValueLayout.OfInt INT = ValueLayout.JAVA_INT;
    private static final ValueLayout.OfLong LONG = ValueLayout.JAVA_LONG;

    private final Arena arena = Arena.ofShared();
    private final String library;
    private final MethodHandle create, destroy, setStream, setWorkspace, gemmEx, gemmBatched, statusString;
    private final MemorySegment handle;
    private final MemorySegment alpha, beta;  // scratch host scalars, reused (one thread drives a backend)

    /** Loads cuBLAS 13 (falling back to 12) and creates a handle bound to {@code stream}. */
    Cublas(long stream, long workspace, long workspaceBytes) {
        SymbolLookup lookup = null;
        String lib = null;
        StringBuilder tried = new StringBuilder();
        for (String name : new String[] {"libcublas.so.13", "libcublas.so.12"}) {
            try {
                lookup = SymbolLookup.libraryLookup(name, arena);
                lib = name;
                break;
            } catch (IllegalArgumentException e) {
                tried.append(name).append(": ").append(e.getMessage()).append("; ");
            }
        }
        if (lookup == null) {
            arena.close();
            throw new IllegalStateException("cuBLAS not found (tried " + tried + "): install the CUDA 13 (or 12) cuBLAS library so that libcublas.so.13 is in the loader path");
        }
        library = lib;
        create = fn(lookup, "cublasCreate_v2", FunctionDescriptor.of(INT, ADDR));
        destroy = fn(lookup, "cublasDestroy_v2", FunctionDescriptor.of(INT, ADDR));
        setStream = fn(lookup, "cublasSetStream_v2", FunctionDescriptor.of(INT, ADDR, ADDR));
        setWorkspace = fn(lookup, "cublasSetWorkspace_v2", FunctionDescriptor.of(INT, ADDR, ADDR, LONG));
        statusString = fn(lookup, "cublasGetStatusString", FunctionDescriptor.of(ADDR, INT));
        gemmEx = fn(lookup, "cublasGemmEx", FunctionDescriptor.of(INT, ADDR, INT, INT, INT, INT, INT,
                ADDR, ADDR, INT, INT, ADDR, INT, INT, ADDR, ADDR, INT, INT, INT, INT));
        gemmBatched = fn(lookup, "cublasGemmStridedBatchedEx", FunctionDescriptor.of(INT, ADDR, INT, INT, INT, INT, INT,
                ADDR, ADDR, INT, INT, LONG, ADDR, INT, INT, LONG, ADDR, ADDR, INT, INT, LONG, INT, INT, INT));
        alpha = arena.allocate(ValueLayout.JAVA_FLOAT);
        beta = arena.allocate(ValueLayout.JAVA_FLOAT);
        MemorySegment h = arena.allocate(ADDR);
        check("cublasCreate_v2", invokeInt(create, h));
        handle = h.get(ADDR, 0);
        check("cublasSetStream_v2", invokeInt(setStream, handle, MemorySegment.ofAddress(stream)));
        check("cublasSetWorkspace_v2", invokeInt(setWorkspace, handle, MemorySegment.ofAddress(workspace), workspaceBytes));
    }

    String library() { return library; }

    /** Column-major {@code C = alpha·op(A)·op(B) + beta·C} (cublasGemmEx). */
    void gemm(int opA, int opB, int m, int n, int k, float a, long A, int aType, int lda,
              long B, int bType, int ldb, float b, long C, int cType, int ldc) {
        alpha.set(ValueLayout.JAVA_FLOAT, 0, a);
        beta.set(ValueLayout.JAVA_FLOAT, 0, b);
        int st;
        try {  // invokeExact: no boxing on the hot path (a GEMM call costs ~10 µs of host time already)
            st = (int) gemmEx.invokeExact(handle, opA, opB, m, n, k, alpha, MemorySegment.ofAddress(A), aType, lda,
                    MemorySegment.ofAddress(B), bType, ldb, beta, MemorySegment.ofAddress(C), cType, ldc, COMPUTE_32F, GEMM_DEFAULT);
        } catch (Throwable t) {
            throw new IllegalStateException("cublasGemmEx call failed", t);
        }
        check("cublasGemmEx", st);
    }

    /** Column-major strided-batched GEMM (cublasGemmStridedBatchedEx); strides in elements. */
    void gemmBatched(int opA, int opB, int m, int n, int k, float a, long A, int aType, int lda, long strideA,
                     long B, int bType, int ldb, long strideB, float b, long C, int cType, int ldc, long strideC, int batch) {
        alpha.set(ValueLayout.JAVA_FLOAT, 0, a);
        beta.set(ValueLayout.JAVA_FLOAT, 0, b);
        int st;
        try {
            st = (int) gemmBatched.invokeExact(handle, opA, opB, m, n, k, alpha,
                    MemorySegment.ofAddress(A), aType, lda, strideA, MemorySegment.ofAddress(B), bType, ldb, strideB, beta,
                    MemorySegment.ofAddress(C), cType, ldc, strideC, batch, COMPUTE_32F, GEMM_DEFAULT);
        } catch (Throwable t) {
            throw new IllegalStateException("cublasGemmStridedBatchedEx call failed", t);
        }
        check("cublasGemmStridedBatchedEx", st);
    }

    private void check(String what, int status) {
        if (status == 0) return;
        String msg;
        try {
            MemorySegment s = (MemorySegment) statusString.invokeExact(status);
            msg = s.reinterpret(256).getString(0);
        } catch (Throwable t) {
            msg = "status " + status;
        }
        throw new IllegalStateException(what + " failed: " + msg + " (" + status + ")");
    }

    private static MethodHandle fn(SymbolLookup lookup, String name, FunctionDescriptor fd) {
        Optional<MemorySegment> sym = lookup.find(name);
        if (sym.isEmpty()) throw new IllegalStateException("cuBLAS symbol " + name + " not found");
        return LINKER.downcallHandle(sym.get(), fd);
    }

    private static int invokeInt(MethodHandle h, Object... args) {
        try {
            return (int) h.invokeWithArguments(args);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    @Override
    public void close() {
        invokeInt(destroy, handle);
        arena.close();
    }
}
