package org.sparselora.cuda;

import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * What each capability of a {@link GpuBackend} builds on: the device it runs on (thread binding,
 * capture state, the stream and the kernel launcher), the façade its tensors belong to, and the
 * argument checks and launch shapes the ops share. A capability calls another's ops through
 * {@link #owner}, the façade (so it runs exactly what any caller of the backend gets, the engine's
 * defaults included), and reaches package-private internals through the façade's fields
 * ({@code owner.blas.gemmBatched}, {@code owner.memory.scratch}).
 */
abstract class GpuOps {
    /** Cap for grid-stride loops: a few waves on an H200. */
    static final int SM_BLOCKS = 132 * 8;

    final GpuBackend owner;
    final GpuDevice dev;
    final Kernels kernels;
    final CudaStream stream;
    /** Streaming multiprocessors of the device (sizes grids that should be exactly one resident wave). */
    final int smCount;

    GpuOps(GpuBackend owner, GpuDevice dev) {
        this.owner = owner;
        this.dev = dev;
        this.kernels = dev.kernels;
        this.stream = dev.stream;
        this.smCount = dev.smCount;
    }

    void bind() { dev.bind(); }

    /** A device buffer for {@code key} of at least {@code bytes} (the backend's scratch, {@link GpuMemory#scratch}). */
    long scratch(String key, long bytes) { return owner.memory.scratch(key, bytes); }

    static GpuTensor g(Tensor t) {
        if (t instanceof GpuTensor gt) return gt;
        throw new IllegalArgumentException("not a GPU tensor: " + (t == null ? "null" : t.getClass().getName() + " " + Tensor.describe(t)));
    }

    GpuTensor own(Tensor t) {
        GpuTensor gt = g(t);
        if (gt.backend() != owner) throw new IllegalArgumentException("tensor " + gt + " belongs to another backend");
        return gt;
    }

    void noCapture(String what) { dev.noCapture(what); }

    interface ArgFill { Kernels.Args fill(Kernels.Args a); }

    static String sfx(GpuTensor t, String op) {
        return switch (t.dtype()) {
            case F32 -> "f32";
            case BF16 -> "bf16";
            default -> throw new IllegalArgumentException(op + ": the GPU kernels take F32 or BF16 tensors, not " + t.dtype() + " (" + t + ")");
        };
    }

    static void needI32(String op, String what, GpuTensor t) {
        if (t.dtype() != DType.I32) throw new IllegalArgumentException(op + ": " + what + " must be I32, got " + t);
    }

    static void needF32(String op, String what, GpuTensor t) {
        if (t.dtype() != DType.F32) throw new IllegalArgumentException(op + ": " + what + " must be F32, got " + t);
    }

    static void sameCount(String op, GpuTensor a, GpuTensor b) {
        if (a.numel() != b.numel()) throw new IllegalArgumentException(op + ": element counts differ, " + a + " vs " + b);
    }

    static void needNumel(String op, String what, GpuTensor t, long n) {
        if (t.numel() != n) throw new IllegalArgumentException(op + ": " + what + " must have " + n + " elements, got " + t);
    }

    /** Every tensor's first element is 16-byte aligned (8-wide vector loads are then legal). */
    static boolean aligned(GpuTensor... ts) {
        for (GpuTensor t : ts) if ((t.address() & 15) != 0) return false;
        return true;
    }

    void launch(String name, int gx, int gy, int block, int smem, Kernels.Args args) {
        kernels.launch(name, gx, gy, block, smem, stream, args);
    }

    /** A grid-stride elementwise kernel whose last two parameters are (long n, int vec). */
    void elementwise(String name, long n, boolean alignedOk, ArgFill fill) {
        boolean vec = alignedOk && n % 8 == 0;
        long work = vec ? n / 8 : n;
        int blocks = (int) Math.max(1, Math.min(SM_BLOCKS, (work + 255) / 256));
        launch(name, blocks, 1, 256, 0, fill.fill(new Kernels.Args()).l(n).i(vec ? 1 : 0));
    }

    static int rowThreads(long workPerRow, int max) {
        long t = Math.min(max, Math.max(32, workPerRow));
        return (int) ((t + 31) / 32 * 32);
    }
}
