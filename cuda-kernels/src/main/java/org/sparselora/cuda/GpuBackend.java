package org.sparselora.cuda;

import static jcuda.driver.JCudaDriver.cuCtxSetCurrent;
import static jcuda.driver.JCudaDriver.cuDeviceGet;
import static jcuda.driver.JCudaDriver.cuDeviceGetAttribute;
import static jcuda.driver.JCudaDriver.cuDeviceGetName;
import static jcuda.driver.JCudaDriver.cuDevicePrimaryCtxRelease;
import static jcuda.driver.JCudaDriver.cuDevicePrimaryCtxRetain;
import static jcuda.driver.JCudaDriver.cuEventCreate;
import static jcuda.driver.JCudaDriver.cuEventDestroy;
import static jcuda.driver.JCudaDriver.cuEventElapsedTime;
import static jcuda.driver.JCudaDriver.cuEventRecord;
import static jcuda.driver.JCudaDriver.cuEventSynchronize;
import static jcuda.driver.JCudaDriver.cuGraphDestroy;
import static jcuda.driver.JCudaDriver.cuGraphExecDestroy;
import static jcuda.driver.JCudaDriver.cuGraphInstantiate;
import static jcuda.driver.JCudaDriver.cuGraphLaunch;
import static jcuda.driver.JCudaDriver.cuMemAlloc;
import static jcuda.driver.JCudaDriver.cuMemFree;
import static jcuda.driver.JCudaDriver.cuMemcpyDtoDAsync;
import static jcuda.driver.JCudaDriver.cuMemcpyDtoHAsync;
import static jcuda.driver.JCudaDriver.cuMemcpyHtoDAsync;
import static jcuda.driver.JCudaDriver.cuMemsetD16Async;
import static jcuda.driver.JCudaDriver.cuMemsetD32Async;
import static jcuda.driver.JCudaDriver.cuStreamBeginCapture;
import static jcuda.driver.JCudaDriver.cuStreamCreate;
import static jcuda.driver.JCudaDriver.cuStreamDestroy;
import static jcuda.driver.JCudaDriver.cuStreamEndCapture;
import static jcuda.driver.JCudaDriver.cuStreamSynchronize;

import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import jcuda.Pointer;
import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdevice_attribute;
import jcuda.driver.CUevent;
import jcuda.driver.CUevent_flags;
import jcuda.driver.CUgraph;
import jcuda.driver.CUgraphExec;
import jcuda.driver.CUstreamCaptureMode;
import jcuda.driver.CUstream_flags;
import jcuda.driver.JCudaDriver;
import org.sparselora.engine.backend.AdamwGroup;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.io.Dtypes;
import org.sparselora.engine.io.HostTensor;

/**
 * The engine's {@link Backend} on one NVIDIA GPU: bf16 storage for weights and activations, fp32
 * math inside every kernel, fp32 for per-row statistics, LoRA master parameters, gradients and
 * AdamW moments. Kernels are the PTX in {@code src/main/cuda} launched through JCuda's driver API;
 * GEMMs go to cuBLAS bound through FFM ({@link Cublas}). All work is queued on one non-blocking
 * stream owned by this backend, so nothing here waits for the device except the downloads
 * ({@code to*}, {@link #sumOfSquares}) and {@link #synchronize()}; a run of ops can be captured
 * into a CUDA graph ({@link #beginCapture()} / {@link #endCapture()}) and replayed.
 *
 * <p><b>GEMM dtype policy.</b> F32×F32 operands run an exact fp32 GEMM (into an F32 C). Every
 * other combination runs bf16×bf16 with fp32 accumulation into C (F32 or BF16): an F32 operand
 * that meets a bf16 one (a LoRA master weight against bf16 activations) is rounded to bf16 into
 * scratch first (LoRA factors are small, so this costs little), which is what mixed-precision
 * training does with fp32 masters.
 *
 * <p>Attention defaults to {@link AttentionKernel#FLASH_PIPELINED} (the fastest measured: fused
 * FlashAttention-2-style kernels that never write the score matrix) wherever it applies: bf16
 * tensors, 16-byte aligned, head dim 32, 64 or 128. Everything else — and any choice made with
 * {@link #setAttentionKernel} — may take the {@link AttentionKernel#GEMM} path: head-major bf16
 * copies of q, k, v (so the G query heads of a KV group are one contiguous matrix and one
 * strided-batched GEMM covers every (sequence, group)), fp32 scores, a fused masked softmax and
 * bf16 probabilities; the backward recomputes the scores from the lse stash. With F32 tensors the
 * attention therefore still has bf16 operand precision. Timings: benchmarks/gpu/NOTES.md.
 *
 * <p>Tensors come from a caching {@link DevicePool}: closing one costs no driver call (so no
 * device-wide sync), and blocks closed during a graph capture stay reserved for that graph.
 *
 * <p>Scratch buffers (attention intermediates, conversions) grow on demand and are kept: a buffer
 * that is outgrown is retired, not freed, until {@link #close()}, because a captured graph may
 * still point at it. A backend is driven by one thread at a time; it makes its context current on
 * whichever thread calls it.
 */
public final class GpuBackend implements Backend, org.sparselora.engine.backend.SparseOps, org.sparselora.engine.backend.GraphCapture {
    private static final int SM_BLOCKS = 132 * 8;    // cap for grid-stride loops: a few waves on an H200
    private static final long CUBLAS_WORKSPACE = 32L << 20;

    private final int device;
    private final String deviceName;
    private final int computeMajor, computeMinor;
    /** Streaming multiprocessors of the device (sizes grids that should be exactly one resident wave). */
    private final int smCount;
    private final CUcontext context = new CUcontext();
    private final CudaStream stream = new CudaStream();
    private final Kernels kernels;
    private final Cublas cublas;
    private final DevPtr cublasWorkspace;
    private final Map<String, DevPtr> scratch = new HashMap<>();
    private final Map<String, Long> scratchBytes = new HashMap<>();
    private final List<DevPtr> retired = new ArrayList<>();
    private final DevicePool<DevPtr> pool = new DevicePool<>(new DevicePool.Driver<>() {
        @Override public DevPtr alloc(long bytes) {
            DevPtr p = new DevPtr();
            cuMemAlloc(p, bytes);
            return p;
        }

        @Override public void free(DevPtr p) { cuMemFree(p); }
    });
    private long directBytes, peakBytes;  // directBytes: scratch and cuBLAS workspace (outside the pool)
    private volatile Thread boundThread;
    private boolean capturing;
    private boolean closed;

    private GpuBackend(int device) {
        Gpu.Availability a = Gpu.check();
        if (!a.available()) throw new IllegalStateException("no usable CUDA GPU: " + a.reason());
        if (device < 0 || device >= a.deviceCount())
            throw new IllegalArgumentException("CUDA device " + device + " does not exist (" + a.deviceCount() + " visible)");
        JCudaDriver.setExceptionsEnabled(true);
        this.device = device;
        CUdevice dev = new CUdevice();
        cuDeviceGet(dev, device);
        byte[] nameBytes = new byte[256];
        cuDeviceGetName(nameBytes, nameBytes.length, dev);
        int len = 0;
        while (len < nameBytes.length && nameBytes[len] != 0) len++;
        deviceName = new String(nameBytes, 0, len);
        int[] v = {0};
        cuDeviceGetAttribute(v, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
        computeMajor = v[0];
        cuDeviceGetAttribute(v, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev);
        computeMinor = v[0];
        cuDeviceGetAttribute(v, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
        smCount = Math.max(1, v[0]);
        cuDevicePrimaryCtxRetain(context, dev);
        cuCtxSetCurrent(context);
        boundThread = Thread.currentThread();
        // Non-blocking: never implicitly ordered against the legacy default stream.
        cuStreamCreate(stream, CUstream_flags.CU_STREAM_NON_BLOCKING);
        kernels = new Kernels(computeMajor);
        cublasWorkspace = alloc(CUBLAS_WORKSPACE);
        cublas = new Cublas(stream.address(), cublasWorkspace.address(), CUBLAS_WORKSPACE);
    }

    /** A backend on CUDA device {@code device}; throws with the reason when no usable GPU is there. */
    public static GpuBackend create(int device) { return new GpuBackend(device); }

    @Override public String name() { return "cuda:" + device; }

    /** The CUDA device ordinal (for {@link PeerGradientExchange}). */
    int deviceOrdinal() { return device; }

    /** The primary context this backend works in (for {@link PeerGradientExchange}'s peer copies). */
    CUcontext context() { return context; }

    /** The backend's one stream (for {@link PeerGradientExchange}). */
    CudaStream stream() { return stream; }

    @Override public DType computeType() { return DType.BF16; }

    /** The SparseLoRA ops ({@link org.sparselora.engine.backend.SparseOps}) run on this backend itself. */
    @Override public Backend backend() { return this; }

    public String deviceName() { return deviceName; }

    /** "9.0" for an H200. */
    public String computeCapability() { return computeMajor + "." + computeMinor; }

    /** The PTX flavour loaded: sm_90 or the portable compute_80. */
    public String ptxArch() { return kernels.arch(); }

    /** The most device memory this backend has held at once, in bytes: pooled tensor blocks
     *  (in use or cached), scratch buffers and the cuBLAS workspace (like PyTorch's
     *  {@code max_memory_reserved}). */
    public long peakMemory() { return peakBytes; }

    /** The most bytes of live tensors at once plus scratch and workspace (like PyTorch's
     *  {@code max_memory_allocated}: cached free blocks not counted). */
    public long peakMemoryInUse() { return pool.peakInUseBytes() + directBytes; }

    /** Starts a new peak window for {@link #peakMemory()} and {@link #peakMemoryInUse()} at the current levels. */
    public void resetPeakMemory() {
        pool.resetPeaks();
        peakBytes = pool.heldBytes() + directBytes;
    }

    /** Device memory this backend holds now, in bytes (same accounting as {@link #peakMemory()}). */
    public long allocatedMemory() { return pool.heldBytes() + directBytes; }

    /** Bytes of live tensors now (pool blocks handed out and not yet closed). */
    public long tensorMemoryInUse() { return pool.inUseBytes(); }

    /** Gives cached (unused) tensor blocks back to the driver; returns the bytes freed. */
    public long trimMemory() {
        bind();
        noCapture("trimMemory");
        return pool.trim();
    }

    // ================================================================== memory

    private void bind() {
        if (closed) throw new IllegalStateException("GpuBackend " + name() + " is closed");
        Thread t = Thread.currentThread();
        if (boundThread != t) {
            cuCtxSetCurrent(context);
            boundThread = t;
        }
    }

    /** A driver allocation outside the pool (scratch, workspace): kept until {@link #close()}. */
    private DevPtr alloc(long bytes) {
        DevPtr p = new DevPtr();
        cuMemAlloc(p, Math.max(bytes, 16));
        directBytes += Math.max(bytes, 16);
        notePeak();
        return p;
    }

    private void notePeak() { peakBytes = Math.max(peakBytes, pool.heldBytes() + directBytes); }

    /** A closed tensor's block goes back to the pool (no driver call, so no device sync). */
    void release(DevicePool.Block<DevPtr> block) {
        if (closed) return;
        pool.release(block);
    }

    @Override
    public Tensor empty(DType dtype, int... shape) {
        bind();
        long n = 1;
        for (int d : shape) {
            if (d < 0) throw new IllegalArgumentException("negative dimension in shape " + Arrays.toString(shape));
            n *= d;
        }
        DevicePool.Block<DevPtr> block = pool.acquire(n * dtype.bytes);
        notePeak();
        return new GpuTensor(this, dtype, shape, block.handle(), block);
    }

    /** A device buffer for {@code key} of at least {@code bytes}; reused across calls (grows, never shrinks). */
    private long scratch(String key, long bytes) {
        Long have = scratchBytes.get(key);
        if (have != null && have >= bytes) return scratch.get(key).address();
        if (have != null) retired.add(scratch.get(key));
        long size = Math.max(bytes, have == null ? 0 : have + have / 2);
        DevPtr p = alloc(size);
        scratch.put(key, p);
        scratchBytes.put(key, size);
        return p.address();
    }

    private static GpuTensor g(Tensor t) {
        if (t instanceof GpuTensor gt) return gt;
        throw new IllegalArgumentException("not a GPU tensor: " + (t == null ? "null" : t.getClass().getName() + " " + Tensor.describe(t)));
    }

    private GpuTensor own(Tensor t) {
        GpuTensor gt = g(t);
        if (gt.backend() != this) throw new IllegalArgumentException("tensor " + gt + " belongs to another backend");
        return gt;
    }

    private void noCapture(String what) {
        if (capturing) throw new IllegalStateException(what + " waits for the device and cannot run while a CUDA graph is being captured");
    }

    /** Host transfers move through a direct buffer of at most this many bytes at a time (tensors
     *  over 2 GiB cannot sit in one ByteBuffer; smaller chunks also bound the host memory used). */
    private static final long CHUNK_BYTES = 64L << 20;

    private interface ChunkFill { void fill(ByteBuffer buf, int from, int count); }

    private interface ChunkRead { void read(ByteBuffer buf, int from, int count); }

    /** Uploads d's elements chunk by chunk; fill writes elements [from, from+count) at buf's start. */
    private void uploadChunked(GpuTensor d, ChunkFill fill) {
        long n = d.numel(), eb = d.dtype().bytes, per = Math.max(1, CHUNK_BYTES / eb);
        if (n == 0) return;
        ByteBuffer buf = ByteBuffer.allocateDirect((int) (Math.min(n, per) * eb)).order(ByteOrder.LITTLE_ENDIAN);
        for (long off = 0; off < n; off += per) {
            int cnt = (int) Math.min(per, n - off);
            fill.fill(buf, (int) off, cnt);
            // From pageable memory the call returns once the bytes are staged: buf may be refilled at once.
            cuMemcpyHtoDAsync(d.ptr.plus(off * eb), Pointer.to(buf), cnt * eb, stream);
        }
    }

    /** Downloads t chunk by chunk (waiting for the stream each time); read converts [from, from+count). */
    private void downloadChunked(GpuTensor t, ChunkRead read) {
        bind();
        noCapture("download");
        long n = t.numel(), eb = t.dtype().bytes, per = Math.max(1, CHUNK_BYTES / eb);
        if (n == 0) { cuStreamSynchronize(stream); return; }
        ByteBuffer buf = ByteBuffer.allocateDirect((int) (Math.min(n, per) * eb)).order(ByteOrder.LITTLE_ENDIAN);
        for (long off = 0; off < n; off += per) {
            int cnt = (int) Math.min(per, n - off);
            cuMemcpyDtoHAsync(Pointer.to(buf), t.ptr.plus(off * eb), cnt * eb, stream);
            cuStreamSynchronize(stream);
            read.read(buf, (int) off, cnt);
        }
    }

    @Override
    public void copyFromHost(Tensor dst, float[] src) {
        bind();
        noCapture("copyFromHost");
        GpuTensor d = own(dst);
        if (src.length != d.numel()) throw new IllegalArgumentException("copyFromHost: " + src.length + " floats into " + d);
        DType dt = d.dtype();
        uploadChunked(d, (buf, from, count) -> {
            switch (dt) {
                case F32 -> buf.asFloatBuffer().put(src, from, count);
                case BF16 -> { var sb = buf.asShortBuffer(); for (int i = from; i < from + count; i++) sb.put(Dtypes.floatToBf16(src[i])); }
                case F16 -> { var sb = buf.asShortBuffer(); for (int i = from; i < from + count; i++) sb.put(Float.floatToFloat16(src[i])); }
                case I32 -> { var ib = buf.asIntBuffer(); for (int i = from; i < from + count; i++) ib.put((int) src[i]); }
            }
        });
    }

    @Override
    public void copyFromHost(Tensor dst, int[] src) {
        bind();
        noCapture("copyFromHost");
        GpuTensor d = own(dst);
        if (src.length != d.numel()) throw new IllegalArgumentException("copyFromHost: " + src.length + " ints into " + d);
        if (d.dtype() != DType.I32) {
            float[] f = new float[src.length];
            for (int i = 0; i < f.length; i++) f[i] = src[i];
            copyFromHost(dst, f);
            return;
        }
        uploadChunked(d, (buf, from, count) -> buf.asIntBuffer().put(src, from, count));
    }

    /**
     * Uploads a host tensor (e.g. a slice of a memory-mapped safetensors file) into a new device
     * tensor of {@code dtype}; when the dtypes match the bytes go straight to the device.
     */
    public Tensor upload(HostTensor h, DType dtype) {
        bind();
        noCapture("upload");
        if (h.dtype() == dtype && h.data().isNative()) {
            Tensor t = empty(dtype, h.shape());
            GpuTensor d = g(t);
            long eb = dtype.bytes;
            uploadChunked(d, (buf, from, count) ->
                    MemorySegment.ofBuffer(buf).copyFrom(h.data().asSlice(from * eb, count * eb)));
            return t;
        }
        return fromFloats(h.toFloats(), dtype, h.shape());
    }

    @Override
    public float[] toFloats(Tensor t) {
        GpuTensor s = own(t);
        if (s.numel() > Integer.MAX_VALUE) throw new IllegalArgumentException("tensor too large for a float[]: " + s);
        float[] out = new float[(int) s.numel()];
        DType dt = s.dtype();
        downloadChunked(s, (buf, from, count) -> {
            switch (dt) {
                case F32 -> buf.asFloatBuffer().get(out, from, count);
                case BF16 -> { var sb = buf.asShortBuffer(); for (int i = 0; i < count; i++) out[from + i] = Dtypes.bf16ToFloat(sb.get(i)); }
                case F16 -> { var sb = buf.asShortBuffer(); for (int i = 0; i < count; i++) out[from + i] = Float.float16ToFloat(sb.get(i)); }
                case I32 -> { var ib = buf.asIntBuffer(); for (int i = 0; i < count; i++) out[from + i] = ib.get(i); }
            }
        });
        return out;
    }

    @Override
    public int[] toInts(Tensor t) {
        GpuTensor s = own(t);
        if (s.dtype() != DType.I32) {
            float[] f = toFloats(t);
            int[] out = new int[f.length];
            for (int i = 0; i < f.length; i++) out[i] = (int) f[i];
            return out;
        }
        if (s.numel() > Integer.MAX_VALUE) throw new IllegalArgumentException("tensor too large for an int[]: " + s);
        int[] out = new int[(int) s.numel()];
        downloadChunked(s, (buf, from, count) -> buf.asIntBuffer().get(out, from, count));
        return out;
    }

    @Override
    public void copy(Tensor dst, Tensor src) {
        bind();
        GpuTensor d = own(dst), s = own(src);
        sameCount("copy", d, s);
        if (d.numel() == 0) return;
        if (d.dtype() == s.dtype()) {
            cuMemcpyDtoDAsync(d.ptr, s.ptr, d.bytes(), stream);
            return;
        }
        String name = "copy_" + sfx(d, "copy") + "_" + sfx(s, "copy");
        elementwise(name, d.numel(), aligned(d, s), a -> a.ptr(d.address()).ptr(s.address()));
    }

    @Override
    public void fill(Tensor t, float value) {
        bind();
        GpuTensor d = own(t);
        if (d.numel() == 0) return;
        switch (d.dtype()) {
            case F32 -> cuMemsetD32Async(d.ptr, Float.floatToRawIntBits(value), d.numel(), stream);
            case I32 -> cuMemsetD32Async(d.ptr, (int) value, d.numel(), stream);
            case BF16 -> cuMemsetD16Async(d.ptr, Dtypes.floatToBf16(value), d.numel(), stream);
            case F16 -> cuMemsetD16Async(d.ptr, Float.floatToFloat16(value), d.numel(), stream);
        }
    }

    @Override
    public void synchronize() {
        bind();
        noCapture("synchronize");
        cuStreamSynchronize(stream);
    }

    // ================================================================== launch helpers

    private interface ArgFill { Kernels.Args fill(Kernels.Args a); }

    private static String sfx(GpuTensor t, String op) {
        return switch (t.dtype()) {
            case F32 -> "f32";
            case BF16 -> "bf16";
            default -> throw new IllegalArgumentException(op + ": the GPU kernels take F32 or BF16 tensors, not " + t.dtype() + " (" + t + ")");
        };
    }

    private static void needI32(String op, String what, GpuTensor t) {
        if (t.dtype() != DType.I32) throw new IllegalArgumentException(op + ": " + what + " must be I32, got " + t);
    }

    private static void needF32(String op, String what, GpuTensor t) {
        if (t.dtype() != DType.F32) throw new IllegalArgumentException(op + ": " + what + " must be F32, got " + t);
    }

    private static void sameCount(String op, GpuTensor a, GpuTensor b) {
        if (a.numel() != b.numel()) throw new IllegalArgumentException(op + ": element counts differ, " + a + " vs " + b);
    }

    private static void needNumel(String op, String what, GpuTensor t, long n) {
        if (t.numel() != n) throw new IllegalArgumentException(op + ": " + what + " must have " + n + " elements, got " + t);
    }

    /** Every tensor's first element is 16-byte aligned (8-wide vector loads are then legal). */
    private static boolean aligned(GpuTensor... ts) {
        for (GpuTensor t : ts) if ((t.address() & 15) != 0) return false;
        return true;
    }

    private void launch(String name, int gx, int gy, int block, int smem, Kernels.Args args) {
        kernels.launch(name, gx, gy, block, smem, stream, args);
    }

    /** A grid-stride elementwise kernel whose last two parameters are (long n, int vec). */
    private void elementwise(String name, long n, boolean alignedOk, ArgFill fill) {
        boolean vec = alignedOk && n % 8 == 0;
        long work = vec ? n / 8 : n;
        int blocks = (int) Math.max(1, Math.min(SM_BLOCKS, (work + 255) / 256));
        launch(name, blocks, 1, 256, 0, fill.fill(new Kernels.Args()).l(n).i(vec ? 1 : 0));
    }

    private static int rowThreads(long workPerRow, int max) {
        long t = Math.min(max, Math.max(32, workPerRow));
        return (int) ((t + 31) / 32 * 32);
    }

    // ================================================================== dense algebra

    private static int cudaType(DType t) {
        return switch (t) {
            case F32 -> Cublas.R_32F;
            case BF16 -> Cublas.R_16BF;
            case F16 -> Cublas.R_16F;
            case I32 -> throw new IllegalArgumentException("matmul: I32 tensors cannot be multiplied");
        };
    }

    @Override
    public void matmul(Tensor c, Tensor a, boolean transA, Tensor b, boolean transB, float alpha, float beta) {
        bind();
        GpuTensor C = own(c), A = own(a), B = own(b);
        if (A.rank() != 2 || B.rank() != 2 || C.rank() != 2)
            throw new IllegalArgumentException("matmul needs 2-D tensors: C " + C + ", A " + A + ", B " + B);
        int M = transA ? A.dim(1) : A.dim(0), K = transA ? A.dim(0) : A.dim(1);
        int KB = transB ? B.dim(1) : B.dim(0), N = transB ? B.dim(0) : B.dim(1);
        if (K != KB || C.dim(0) != M || C.dim(1) != N)
            throw new IllegalArgumentException("matmul shapes disagree: C " + C + " = op(A " + A + (transA ? ")ᵀ" : ")") + " · op(B " + B + (transB ? ")ᵀ" : ")"));
        if (C.dtype() != DType.F32 && C.dtype() != computeType() && C.dtype() != DType.F16)
            throw new IllegalArgumentException("matmul: C must be F32 or " + computeType() + ", got " + C);
        if (M == 0 || N == 0) return;
        if (K == 0) { // C = beta·C
            if (beta == 0f) fill(C, 0f); else if (beta != 1f) scale(C, beta);
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
    @Override
    public void matmulRowBlocks(Tensor c, int cOff, int cStride, Tensor a, int aOff, int aStride, Tensor b, boolean transB,
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
        if (blocks == 0 || m == 0 || N == 0) return;
        DType aT = A.dtype(), bT = B.dtype(), cT = C.dtype();
        boolean direct = K > 0 && aT == bT && (aT == computeType() && (cT == computeType() || cT == DType.F32)
                                               || aT == DType.F32 && cT == DType.F32);
        if (!direct || blocks == 1) {
            Backend.super.matmulRowBlocks(c, cOff, cStride, a, aOff, aStride, b, transB, blocks, m, alpha, beta);
            return;
        }
        long aAddr = A.address() + (long) aOff * K * aT.bytes, cAddr = C.address() + (long) cOff * N * cT.bytes;
        gemmBatched(false, transB, m, N, K, alpha, aAddr, aT, K, (long) aStride * K, B.address(), bT, B.dim(1), 0L,
                beta, cAddr, cT, N, (long) cStride * N, blocks);
    }

    /**
     * One cuBLAS strided-batched GEMM (A broadcast with stride 0) when the right operands and the
     * outputs are equally spaced, non-overlapping blocks of memory with one shape and dtype each (the
     * predictor stacks its factors that way); otherwise the per-product default.
     */
    @Override
    public void matmulSharedA(Tensor[] outs, Tensor a, Tensor[] bs) {
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
        batched &= M > 0 && K > 0 && N > 0 && aT == bT && (aT == computeType() && (cT == computeType() || cT == DType.F32)
                                                            || aT == DType.F32 && cT == DType.F32);
        long bStride = batched ? B[1].address() - B[0].address() : 0, cStride = batched ? O[1].address() - O[0].address() : 0;
        batched &= bStride >= (long) K * N * bT.bytes && bStride % bT.bytes == 0 && cStride >= (long) M * N * cT.bytes && cStride % cT.bytes == 0;
        for (int i = 0; batched && i < count; i++)
            batched = B[i].rank() == 2 && B[i].dim(0) == K && B[i].dim(1) == N && B[i].dtype() == bT
                    && O[i].rank() == 2 && O[i].dim(0) == M && O[i].dim(1) == N && O[i].dtype() == cT
                    && B[i].address() == B[0].address() + i * bStride && O[i].address() == O[0].address() + i * cStride;
        if (!batched) { Backend.super.matmulSharedA(outs, a, bs); return; }
        String skinny = skinnyKernel(M, N, aT, cT);
        boolean skinnyOk = skinny != null && aligned(A) && aligned(B[0]) && aligned(O[0])
                && (bStride / bT.bytes) % 8 == 0 && (cStride / cT.bytes) % 8 == 0;
        if (skinnyOk && skinnySharedA) {
            launch(skinny, M, count, 256, 0, new Kernels.Args().ptr(O[0].address()).ptr(A.address()).ptr(B[0].address())
                    .i(K).i(N).l(bStride / bT.bytes).l(cStride / cT.bytes));
            return;
        }
        gemmBatched(false, false, M, N, K, 1f, A.address(), aT, K, 0L, B[0].address(), bT, N, bStride / bT.bytes,
                0f, O[0].address(), cT, N, cStride / cT.bytes, count);
    }

    /** matmulSharedA with a small left operand through skinny_shared_a (default) or cuBLAS's batched GEMM. */
    private boolean skinnySharedA = true;

    void setSkinnySharedA(boolean on) { skinnySharedA = on; }

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
        GpuTensor tmp = new GpuTensor(this, target, src.shape(), new DevPtr().plus(addr), null);
        copy(tmp, src);
        return addr;
    }

    /** Row-major strided-batched C_i = alpha·op(A_i)·op(B_i) + beta·C_i; lds and strides in elements. */
    private void gemmBatched(boolean transA, boolean transB, int M, int N, int K, float alpha,
                             long A, DType aT, int lda, long strideA, long B, DType bT, int ldb, long strideB,
                             float beta, long C, DType cT, int ldc, long strideC, int batch) {
        cublas.gemmBatched(transB ? Cublas.OP_T : Cublas.OP_N, transA ? Cublas.OP_T : Cublas.OP_N, N, M, K, alpha,
                B, cudaType(bT), ldb, strideB, A, cudaType(aT), lda, strideA, beta, C, cudaType(cT), ldc, strideC, batch);
    }

    @Override
    public void axpy(Tensor y, float alpha, Tensor x) {
        bind();
        GpuTensor Y = own(y), X = own(x);
        sameCount("axpy", Y, X);
        if (Y.numel() == 0) return;
        elementwise("axpy_" + sfx(Y, "axpy") + "_" + sfx(X, "axpy"), Y.numel(), aligned(Y, X),
                a -> a.ptr(Y.address()).f(alpha).ptr(X.address()));
    }

    @Override
    public void scale(Tensor t, float s) {
        bind();
        GpuTensor T = own(t);
        if (T.numel() == 0) return;
        elementwise("scale_" + sfx(T, "scale"), T.numel(), aligned(T), a -> a.ptr(T.address()).f(s));
    }

    @Override
    public void mul(Tensor out, Tensor a, Tensor b) {
        bind();
        GpuTensor O = own(out), A = own(a), B = own(b);
        sameCount("mul", O, A);
        sameCount("mul", O, B);
        if (O.numel() == 0) return;
        elementwise("mul_" + sfx(O, "mul") + "_" + sfx(A, "mul") + "_" + sfx(B, "mul"), O.numel(), aligned(O, A, B),
                x -> x.ptr(O.address()).ptr(A.address()).ptr(B.address()));
    }

    @Override
    public double sumOfSquares(List<Tensor> tensors) {
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

    // ================================================================== layers

    @Override
    public void embedding(Tensor out, Tensor ids, Tensor table) {
        bind();
        GpuTensor O = own(out), I = own(ids), W = own(table);
        needI32("embedding", "ids", I);
        int N = (int) I.numel(), C = W.dim(-1), V = (int) (W.numel() / C);
        needNumel("embedding", "out", O, (long) N * C);
        if (N == 0) return;
        boolean vec = C % 8 == 0 && aligned(O, W);
        launch("embedding_" + sfx(O, "embedding") + "_" + sfx(W, "embedding"), N, 1, rowThreads(vec ? C / 8 : C, 256), 0,
                new Kernels.Args().ptr(O.address()).ptr(I.address()).ptr(W.address()).i(V).i(C).i(vec ? 1 : 0));
    }

    @Override
    public void rmsNorm(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps) {
        bind();
        GpuTensor O = own(out), R = own(rstd), X = own(x), W = own(weight);
        norm("rmsnorm", O, R, X, null, W, eps);
    }

    @Override
    public void addRmsNorm(Tensor residual, Tensor out, Tensor rstd, Tensor delta, Tensor weight, float eps) {
        bind();
        GpuTensor Res = own(residual), O = own(out), R = own(rstd), D = own(delta), W = own(weight);
        if (D.dtype() != Res.dtype()) { Backend.super.addRmsNorm(residual, out, rstd, delta, weight, eps); return; }
        sameCount("addRmsNorm", Res, D);
        norm("add_rmsnorm", O, R, Res, D, W, eps);
    }

    @Override
    public void addRmsNormTo(Tensor residualOut, Tensor residualIn, Tensor out, Tensor rstd, Tensor delta, Tensor weight, float eps) {
        bind();
        GpuTensor Res = own(residualOut), In = own(residualIn), O = own(out), R = own(rstd), D = own(delta), W = own(weight);
        if (D.dtype() != Res.dtype() || In.dtype() != Res.dtype() || Res == In) {
            Backend.super.addRmsNormTo(residualOut, residualIn, out, rstd, delta, weight, eps);
            return;
        }
        sameCount("addRmsNormTo", Res, D);
        sameCount("addRmsNormTo", Res, In);
        norm("add_rmsnorm_to", O, R, Res, In, D, W, eps);
    }

    private void norm(String op, GpuTensor O, GpuTensor R, GpuTensor X, GpuTensor D, GpuTensor W, float eps) {
        norm(op, O, R, X, null, D, W, eps);
    }

    /** The rmsnorm kernels; In (the residual read, written to X with D added) only for add_rmsnorm_to. */
    private void norm(String op, GpuTensor O, GpuTensor R, GpuTensor X, GpuTensor In, GpuTensor D, GpuTensor W, float eps) {
        needF32(op, "rstd", R);
        int C = (int) W.numel();
        if (C == 0 || X.numel() % C != 0) throw new IllegalArgumentException(op + ": x " + X + " rows do not match weight " + W);
        int N = (int) (X.numel() / C);
        needNumel(op, "out", O, X.numel());
        needNumel(op, "rstd", R, N);
        if (O.dtype() != X.dtype()) throw new IllegalArgumentException(op + ": out " + O + " and x " + X + " must share a dtype");
        if (N == 0) return;
        boolean vec = C % 8 == 0 && aligned(O, X, W) && (D == null || aligned(D)) && (In == null || aligned(In));
        String name = op + "_" + sfx(X, op) + "_" + sfx(W, op);
        Kernels.Args a = new Kernels.Args();
        if (D == null) a.ptr(O.address()).ptr(R.address()).ptr(X.address());
        else if (In == null) a.ptr(X.address()).ptr(O.address()).ptr(R.address()).ptr(D.address());
        else a.ptr(X.address()).ptr(In.address()).ptr(O.address()).ptr(R.address()).ptr(D.address());
        launch(name, N, 1, rowThreads(vec ? C / 8 : C, 256), 0, a.ptr(W.address()).i(C).f(eps).i(vec ? 1 : 0));
    }

    @Override
    public void rmsNormBackward(Tensor dx, Tensor dout, Tensor x, Tensor weight, Tensor rstd, boolean accumulate) {
        bind();
        GpuTensor DX = own(dx), DO = own(dout), X = own(x), W = own(weight), R = own(rstd);
        needF32("rmsNormBackward", "rstd", R);
        int C = (int) W.numel();
        int N = (int) (X.numel() / C);
        needNumel("rmsNormBackward", "dx", DX, X.numel());
        needNumel("rmsNormBackward", "dout", DO, X.numel());
        needNumel("rmsNormBackward", "rstd", R, N);
        if (DX.dtype() != X.dtype() || DO.dtype() != X.dtype())
            throw new IllegalArgumentException("rmsNormBackward: dx " + DX + ", dout " + DO + " and x " + X + " must share a dtype");
        if (N == 0) return;
        boolean vec = C % 8 == 0 && aligned(DX, DO, X, W);
        launch("rmsnorm_bwd_" + sfx(X, "rmsNormBackward") + "_" + sfx(W, "rmsNormBackward"), N, 1, rowThreads(vec ? C / 8 : C, 256), 0,
                new Kernels.Args().ptr(DX.address()).ptr(DO.address()).ptr(X.address()).ptr(W.address()).ptr(R.address())
                        .i(C).i(accumulate ? 1 : 0).i(vec ? 1 : 0));
    }

    @Override
    public void rope(Tensor x, Tensor positions, Tensor cos, Tensor sin, int heads, int headDim, boolean inverse) {
        bind();
        GpuTensor X = own(x), P = own(positions), CO = own(cos), SI = own(sin);
        needI32("rope", "positions", P);
        needF32("rope", "cos", CO);
        needF32("rope", "sin", SI);
        if (headDim % 2 != 0) throw new IllegalArgumentException("rope: head dim must be even, got " + headDim);
        int N = (int) P.numel();
        needNumel("rope", "x", X, (long) N * heads * headDim);
        if (CO.numel() != SI.numel() || CO.numel() % (headDim / 2) != 0)
            throw new IllegalArgumentException("rope: cos " + CO + " / sin " + SI + " must be (maxPos, " + headDim / 2 + ")");
        long total = (long) N * heads * (headDim / 2);
        if (total == 0) return;
        int blocks = (int) Math.min(SM_BLOCKS * 4L, (total + 255) / 256);
        launch("rope_" + sfx(X, "rope"), blocks, 1, 256, 0, new Kernels.Args().ptr(X.address()).ptr(P.address())
                .ptr(CO.address()).ptr(SI.address()).i(N).i(heads).i(headDim).i(inverse ? 1 : 0));
    }

    /** Both rotations in one launch ({@code rope_qk_*}): 16-byte vector accesses when D % 16 == 0 and the tensors are aligned. */
    @Override
    public void ropeQK(Tensor q, Tensor k, Tensor positions, Tensor cos, Tensor sin, int heads, int kvHeads, int headDim, boolean inverse) {
        bind();
        GpuTensor Q = own(q), K = own(k), P = own(positions), CO = own(cos), SI = own(sin);
        if (Q.dtype() != K.dtype()) { Backend.super.ropeQK(q, k, positions, cos, sin, heads, kvHeads, headDim, inverse); return; }
        needI32("ropeQK", "positions", P);
        needF32("ropeQK", "cos", CO);
        needF32("ropeQK", "sin", SI);
        if (headDim <= 0 || headDim % 2 != 0) throw new IllegalArgumentException("ropeQK: head dim must be even and positive, got " + headDim);
        if (heads < 0 || kvHeads < 0) throw new IllegalArgumentException("ropeQK: negative head count " + heads + "/" + kvHeads);
        int N = (int) P.numel(), half = headDim / 2;
        needNumel("ropeQK", "q", Q, (long) N * heads * headDim);
        needNumel("ropeQK", "k", K, (long) N * kvHeads * headDim);
        if (CO.numel() != SI.numel() || CO.numel() % half != 0)
            throw new IllegalArgumentException("ropeQK: cos " + CO + " / sin " + SI + " must be (maxPos, " + half + ")");
        boolean vec = headDim % 16 == 0 && aligned(Q, K, CO, SI);
        long total = (long) N * (heads + kvHeads) * (vec ? half / 8 : half);
        if (total == 0) return;
        int blocks = (int) Math.min(SM_BLOCKS * 4L, (total + 255) / 256);
        launch("rope_qk_" + sfx(Q, "ropeQK"), blocks, 1, 256, 0, new Kernels.Args().ptr(Q.address()).ptr(K.address()).ptr(P.address())
                .ptr(CO.address()).ptr(SI.address()).i(N).i(heads).i(kvHeads).i(headDim).i(inverse ? 1 : 0).i(vec ? 1 : 0));
    }

    // ---------------------------------------------------------------- attention

    private void checkAttention(String op, GpuTensor q, GpuTensor k, GpuTensor v, GpuTensor ks, int B, int T, int Hq, int Hkv, int D) {
        if (Hkv <= 0 || Hq % Hkv != 0) throw new IllegalArgumentException(op + ": heads " + Hq + " is not a multiple of kv heads " + Hkv);
        needNumel(op, "q", q, (long) B * T * Hq * D);
        needNumel(op, "k", k, (long) B * T * Hkv * D);
        needNumel(op, "v", v, (long) B * T * Hkv * D);
        needI32(op, "keyStart", ks);
        needNumel(op, "keyStart", ks, B);
    }

    private void toHeads(long dst, GpuTensor src, int B, int T, int H, int D) {
        boolean vec = D % 8 == 0 && aligned(src) && (dst & 15) == 0;
        long work = (long) B * T * H * D / (vec ? 8 : 1);
        int blocks = (int) Math.max(1, Math.min(SM_BLOCKS * 4L, (work + 255) / 256));
        launch("to_heads_" + sfx(src, "attention"), blocks, 1, 256, 0,
                new Kernels.Args().ptr(dst).ptr(src.address()).i(B).i(T).i(H).i(D).i(vec ? 1 : 0));
    }

    private void fromHeads(GpuTensor dst, long src, int B, int T, int H, int D) {
        boolean vec = D % 8 == 0 && aligned(dst) && (src & 15) == 0;
        long work = (long) B * T * H * D / (vec ? 8 : 1);
        int blocks = (int) Math.max(1, Math.min(SM_BLOCKS * 4L, (work + 255) / 256));
        launch("from_heads_" + sfx(dst, "attention"), blocks, 1, 256, 0,
                new Kernels.Args().ptr(dst.address()).ptr(src).i(B).i(T).i(H).i(D).i(vec ? 1 : 0));
    }

    private static long align256(long bytes) { return (bytes + 255) & ~255L; }

    /**
     * How attention runs (the fused kind needs bf16 tensors with head dim 32/64/128, 16-byte aligned;
     * anything else takes {@link #GEMM}). Both compute the same function and are each held against the
     * CPU. Forward + backward at B8 T512 32/8×128 on the H200 (NOTES.md run 4): GEMM ≈ 1090 µs,
     * FLASH_PIPELINED ≈ 432 (the default). Two earlier fused kinds (FLASH_WMMA ≈ 3000 µs, FLASH_MMA ≈
     * 1530) were removed once FLASH_PIPELINED beat both at every measured shape.
     */
    public enum AttentionKernel {
        /** cuBLAS strided-batched GEMMs on head-major copies + fused masked softmax, fp32 scores in memory. */
        GEMM,
        /**
         * mma.sync kernels with cp.async double-buffered tiles and ldmatrix fragments: 128-query
         * forward blocks (4 warps of 32 rows at D = 128, 8 of 16 below); one backward kernel per
         * 64-key tile with dQ accumulated in fp32 by vector reductions (then rounded to bf16).
         */
        FLASH_PIPELINED
    }

    /** The kernel a new backend uses: the fastest measured (NOTES.md run 4). */
    public static final AttentionKernel DEFAULT_ATTENTION_KERNEL = AttentionKernel.FLASH_PIPELINED;

    private AttentionKernel attentionKernel = DEFAULT_ATTENTION_KERNEL;

    private static final float LOG2E = 1.4426950408889634f;

    public void setAttentionKernel(AttentionKernel k) { attentionKernel = k; }

    public AttentionKernel attentionKernel() { return attentionKernel; }

    private static boolean flashEligible(int D, GpuTensor... ts) {
        if (D != 32 && D != 64 && D != 128) return false;
        for (GpuTensor t : ts) if (t.dtype() != DType.BF16) return false;
        return aligned(ts);
    }

    /** Dynamic shared memory of flash3_fwd_d{D}: mirrors F3Smem in attention.cu (Q tile of 128 rows, two K and two V tiles of 64). */
    static int flash3SharedBytes(int D) { return (128 + 4 * 64) * (D + 8) * 2; }

    /**
     * Dynamic shared memory of flash3_bwd_d{D}: mirrors B3Smem in attention.cu with 4 warps (K, V
     * tiles of 64 keys; two Q and two dO tiles of 32 rows; dSᵀ; row stats).
     */
    static int flash3BwdSharedBytes(int D) { return (2 * 64 + 4 * 32) * (D + 8) * 2 + 64 * (32 + 8) * 2 + 4 * 32 * 4; }

    @Override
    public void attention(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyStart,
                          int batch, int seqLen, int heads, int kvHeads, int headDim, float scale) {
        bind();
        GpuTensor O = own(out), L = own(lse), Q = own(q), K = own(k), V = own(v), KS = own(keyStart);
        int B = batch, T = seqLen, Hq = heads, Hkv = kvHeads, D = headDim, G = Hq / Math.max(1, Hkv);
        checkAttention("attention", Q, K, V, KS, B, T, Hq, Hkv, D);
        needNumel("attention", "out", O, Q.numel());
        needF32("attention", "lse", L);
        needNumel("attention", "lse", L, (long) B * Hq * T);
        if (B == 0 || T == 0) return;
        if (attentionKernel == AttentionKernel.FLASH_PIPELINED && flashEligible(D, O, Q, K, V)) {
            // grid (head, sequence, 128-query tile): the kernel walks the query tiles longest first
            // 128 queries per block: 4 warps of 32 rows at D = 128, 8 warps of 16 rows below (attention.cu)
            kernels.launch("flash3_fwd_d" + D, Hq, B, (T + 127) / 128, D == 128 ? 128 : 256, flash3SharedBytes(D), stream,
                    new Kernels.Args().ptr(O.address()).ptr(L.address()).ptr(Q.address()).ptr(K.address()).ptr(V.address())
                            .ptr(KS.address()).i(T).i(Hq).i(Hkv).f(scale * LOG2E));
            return;
        }
        long qn = (long) B * Hq * T * D, kn = (long) B * Hkv * T * D, sn = (long) B * Hq * T * T;
        long qh = scratch("attn.qh", align256(qn * 2)), kh = scratch("attn.kh", align256(kn * 2)), vh = scratch("attn.vh", align256(kn * 2));
        long S = scratch("attn.S", sn * 4), P = scratch("attn.P", sn * 2), oh = scratch("attn.oh", align256(qn * 2));
        toHeads(qh, Q, B, T, Hq, D);
        toHeads(kh, K, B, T, Hkv, D);
        toHeads(vh, V, B, T, Hkv, D);
        int GT = G * T;
        // S_bg (G·T × T) = scale · Qh_bg · Kh_bgᵀ, one batch entry per (sequence, kv group)
        gemmBatched(false, true, GT, T, D, scale, qh, DType.BF16, D, (long) GT * D, kh, DType.BF16, D, (long) T * D,
                0f, S, DType.F32, T, (long) GT * T, B * Hkv);
        long rows = (long) B * Hq * T;
        if (T <= 1024) {  // one warp per row, the row in registers
            String w = T <= 256 ? "w8" : T <= 512 ? "w16" : "w32";
            launch("attn_softmax_" + w, (int) ((rows * 32 + 255) / 256), 1, 256, 0,
                    new Kernels.Args().ptr(P).ptr(L.address()).ptr(S).ptr(KS.address()).i(Hq).i(T).l(rows));
        } else {
            launch("attn_softmax", (int) rows, 1, rowThreads(T, 256), 0,
                    new Kernels.Args().ptr(P).ptr(L.address()).ptr(S).ptr(KS.address()).i(Hq).i(T));
        }
        // Oh_bg (G·T × D) = P_bg · Vh_bg
        gemmBatched(false, false, GT, D, T, 1f, P, DType.BF16, T, (long) GT * T, vh, DType.BF16, D, (long) T * D,
                0f, oh, DType.BF16, D, (long) GT * D, B * Hkv);
        fromHeads(O, oh, B, T, Hq, D);
    }

    @Override
    public void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse,
                                  Tensor q, Tensor k, Tensor v, Tensor keyStart,
                                  int batch, int seqLen, int heads, int kvHeads, int headDim, float scale) {
        bind();
        GpuTensor DQ = own(dq), DK = own(dk), DV = own(dv), DO = own(dout), O = own(out), L = own(lse);
        GpuTensor Q = own(q), K = own(k), V = own(v), KS = own(keyStart);
        int B = batch, T = seqLen, Hq = heads, Hkv = kvHeads, D = headDim, G = Hq / Math.max(1, Hkv);
        checkAttention("attentionBackward", Q, K, V, KS, B, T, Hq, Hkv, D);
        needNumel("attentionBackward", "dq", DQ, Q.numel());
        needNumel("attentionBackward", "dk", DK, K.numel());
        needNumel("attentionBackward", "dv", DV, V.numel());
        needNumel("attentionBackward", "dout", DO, Q.numel());
        needNumel("attentionBackward", "out", O, Q.numel());
        needF32("attentionBackward", "lse", L);
        needNumel("attentionBackward", "lse", L, (long) B * Hq * T);
        if (DO.dtype() != O.dtype()) throw new IllegalArgumentException("attentionBackward: dout " + DO + " and out " + O + " must share a dtype");
        if (B == 0 || T == 0) return;
        long rows = (long) B * Hq * T;
        if (attentionKernel == AttentionKernel.FLASH_PIPELINED && flashEligible(D, DQ, DK, DV, DO, O, Q, K, V)) {
            long drow = scratch("attn.Drow", rows * 4);
            long dqn = (long) B * T * Hq * D;
            long dqAcc = scratch("attn.dqAcc", dqn * 4);
            // Drow = rowsum(dO ⊙ O) and the dQ accumulator cleared, in one pass (D/8 lanes per row)
            long warps = (rows * (D / 8) + 31) / 32;
            launch("attn_bwd_prep", (int) ((warps + 7) / 8), 1, 256, 0,
                    new Kernels.Args().ptr(drow).ptr(dqAcc).ptr(DO.address()).ptr(O.address()).i(B).i(T).i(Hq).i(D));
            // grid (kv head, sequence, 64-key tile): key tile 0, which meets the most query tiles, first
            kernels.launch("flash3_bwd_d" + D, Hkv, B, (T + 63) / 64, 128, flash3BwdSharedBytes(D), stream,
                    new Kernels.Args().ptr(DK.address()).ptr(DV.address()).ptr(dqAcc).ptr(Q.address()).ptr(K.address()).ptr(V.address())
                            .ptr(DO.address()).ptr(L.address()).ptr(drow).ptr(KS.address()).i(T).i(Hq).i(Hkv).f(scale * LOG2E).f(scale));
            launch("attn_dq_convert", (int) Math.max(1, Math.min(SM_BLOCKS * 4L, (dqn / 8 + 255) / 256)), 1, 256, 0,
                    new Kernels.Args().ptr(DQ.address()).ptr(dqAcc).l(dqn / 8));
            return;
        }
        long qn = (long) B * Hq * T * D, kn = (long) B * Hkv * T * D, sn = (long) B * Hq * T * T;
        long qh = scratch("attn.qh", align256(qn * 2)), kh = scratch("attn.kh", align256(kn * 2)), vh = scratch("attn.vh", align256(kn * 2));
        long doh = scratch("attn.doh", align256(qn * 2)), S = scratch("attn.S", sn * 4), dP = scratch("attn.dP", sn * 4);
        long P = scratch("attn.P", sn * 2), dS = scratch("attn.dS", sn * 2), Drow = scratch("attn.Drow", rows * 4);
        long dqh = scratch("attn.dqh", align256(qn * 2)), dkh = scratch("attn.dkh", align256(kn * 2)), dvh = scratch("attn.dvh", align256(kn * 2));
        toHeads(qh, Q, B, T, Hq, D);
        toHeads(kh, K, B, T, Hkv, D);
        toHeads(vh, V, B, T, Hkv, D);
        toHeads(doh, DO, B, T, Hq, D);
        int GT = G * T, batches = B * Hkv;
        gemmBatched(false, true, GT, T, D, scale, qh, DType.BF16, D, (long) GT * D, kh, DType.BF16, D, (long) T * D,
                0f, S, DType.F32, T, (long) GT * T, batches);
        // dP_bg (G·T × T) = dOh_bg · Vh_bgᵀ
        gemmBatched(false, true, GT, T, D, 1f, doh, DType.BF16, D, (long) GT * D, vh, DType.BF16, D, (long) T * D,
                0f, dP, DType.F32, T, (long) GT * T, batches);
        launch("attn_rowdot_" + sfx(O, "attentionBackward"), (int) ((rows * 32 + 255) / 256), 1, 256, 0,
                new Kernels.Args().ptr(Drow).ptr(DO.address()).ptr(O.address()).i(B).i(T).i(Hq).i(D));
        launch("attn_softmax_bwd", (int) rows, 1, rowThreads(T, 256), 0, new Kernels.Args().ptr(P).ptr(dS).ptr(S).ptr(dP)
                .ptr(L.address()).ptr(Drow).ptr(KS.address()).i(Hq).i(T).f(scale));
        // dVh_bg (T × D) = P_bgᵀ · dOh_bg      (sums over the G query heads of the group: K = G·T)
        gemmBatched(true, false, T, D, GT, 1f, P, DType.BF16, T, (long) GT * T, doh, DType.BF16, D, (long) GT * D,
                0f, dvh, DType.BF16, D, (long) T * D, batches);
        // dQh_bg (G·T × D) = dS_bg · Kh_bg      (scale folded into dS)
        gemmBatched(false, false, GT, D, T, 1f, dS, DType.BF16, T, (long) GT * T, kh, DType.BF16, D, (long) T * D,
                0f, dqh, DType.BF16, D, (long) GT * D, batches);
        // dKh_bg (T × D) = dS_bgᵀ · Qh_bg
        gemmBatched(true, false, T, D, GT, 1f, dS, DType.BF16, T, (long) GT * T, qh, DType.BF16, D, (long) GT * D,
                0f, dkh, DType.BF16, D, (long) T * D, batches);
        fromHeads(DQ, dqh, B, T, Hq, D);
        fromHeads(DK, dkh, B, T, Hkv, D);
        fromHeads(DV, dvh, B, T, Hkv, D);
    }

    @Override
    public void attentionCached(Tensor out, Tensor q, Tensor kCache, Tensor vCache, int pos0,
                                int heads, int kvHeads, int headDim, float scale) {
        bind();
        GpuTensor O = own(out), Q = own(q), KC = own(kCache), VC = own(vCache);
        int D = headDim, Hq = heads, Hkv = kvHeads;
        if (Hkv <= 0 || Hq % Hkv != 0) throw new IllegalArgumentException("attentionCached: heads " + Hq + " is not a multiple of kv heads " + Hkv);
        int n = (int) (Q.numel() / ((long) Hq * D));
        needNumel("attentionCached", "out", O, Q.numel());
        long maxT = KC.numel() / ((long) Hkv * D);
        if (pos0 < 0 || pos0 + n > maxT) throw new IllegalArgumentException("attentionCached: positions [" + pos0 + ", " + (pos0 + n) + ") exceed the cache of " + maxT);
        if (O.dtype() != Q.dtype() || KC.dtype() != Q.dtype() || VC.dtype() != Q.dtype())
            throw new IllegalArgumentException("attentionCached: out, q and the caches must share a dtype");
        if (n == 0) return;
        long smem = (long) (D + pos0 + n) * 4;
        if (smem > 48 * 1024) throw new IllegalArgumentException("attentionCached: context of " + (pos0 + n) + " tokens exceeds this kernel's shared-memory score buffer (~12K)");
        kernels.launch("attn_cached_" + sfx(Q, "attentionCached"), n, Hq, 128, (int) smem, stream,
                new Kernels.Args().ptr(O.address()).ptr(Q.address()).ptr(KC.address()).ptr(VC.address())
                        .i(pos0).i(Hq).i(Hkv).i(D).f(scale));
    }

    @Override
    public void swiglu(Tensor out, Tensor gate, Tensor up) {
        bind();
        GpuTensor O = own(out), G = own(gate), U = own(up);
        sameCount("swiglu", O, G);
        sameCount("swiglu", O, U);
        if (G.dtype() != O.dtype() || U.dtype() != O.dtype()) throw new IllegalArgumentException("swiglu: out, gate, up must share a dtype");
        if (O.numel() == 0) return;
        elementwise("swiglu_" + sfx(O, "swiglu"), O.numel(), aligned(O, G, U), a -> a.ptr(O.address()).ptr(G.address()).ptr(U.address()));
    }

    @Override
    public void swigluBackward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up) {
        bind();
        GpuTensor DG = own(dgate), DU = own(dup), DO = own(dout), G = own(gate), U = own(up);
        for (GpuTensor t : new GpuTensor[] {DU, DO, G, U}) {
            sameCount("swigluBackward", DG, t);
            if (t.dtype() != DG.dtype()) throw new IllegalArgumentException("swigluBackward: all tensors must share a dtype");
        }
        if (DG.numel() == 0) return;
        elementwise("swiglu_bwd_" + sfx(DG, "swigluBackward"), DG.numel(), aligned(DG, DU, DO, G, U),
                a -> a.ptr(DG.address()).ptr(DU.address()).ptr(DO.address()).ptr(G.address()).ptr(U.address()));
    }

    @Override
    public void crossEntropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, float gradScale) {
        bind();
        GpuTensor LS = own(losses), DL = own(dlogits), LG = own(logits), TG = own(targets);
        needF32("crossEntropy", "losses", LS);
        needI32("crossEntropy", "targets", TG);
        int n = (int) TG.numel();
        needNumel("crossEntropy", "losses", LS, n);
        if (n == 0) return;
        int V = (int) (LG.numel() / n);
        needNumel("crossEntropy", "logits", LG, (long) n * V);
        needNumel("crossEntropy", "dlogits", DL, (long) n * V);
        boolean vec = V % 8 == 0 && aligned(DL, LG);
        launch("cross_entropy_" + sfx(LG, "crossEntropy") + "_" + sfx(DL, "crossEntropy"), n, 1, rowThreads(vec ? V / 8 : V, 1024), 0,
                new Kernels.Args().ptr(LS.address()).ptr(DL.address()).ptr(LG.address()).ptr(TG.address()).i(V).f(gradScale).i(vec ? 1 : 0));
    }

    @Override
    public void dropout(Tensor out, Tensor x, float p, long seed) {
        bind();
        GpuTensor O = own(out), X = own(x);
        sameCount("dropout", O, X);
        if (!(p >= 0f && p < 1f)) throw new IllegalArgumentException("dropout: p must be in [0, 1), got " + p);
        if (p == 0f) { copy(O, X); return; }
        if (O.numel() == 0) return;
        long n = O.numel();
        int blocks = (int) Math.max(1, Math.min(SM_BLOCKS, (n + 255) / 256));
        launch("dropout_" + sfx(O, "dropout") + "_" + sfx(X, "dropout"), blocks, 1, 256, 0,
                new Kernels.Args().ptr(O.address()).ptr(X.address()).f(p).l(seed).l(n));
    }

    /** The normal fill drawn on the device ({@code randn_*}: {@link org.sparselora.engine.backend.CounterRng#normal}'s rule). */
    @Override
    public void randomNormal(Tensor t, long seed, float mean, float std) {
        bind();
        GpuTensor T = own(t);
        if (T.dtype() != DType.F32 && T.dtype() != DType.BF16) throw new IllegalArgumentException("randomNormal: F32 or BF16 tensor, got " + T);
        long n = T.numel();
        if (n == 0) return;
        int blocks = (int) Math.max(1, Math.min(SM_BLOCKS, (n + 255) / 256));
        launch("randn_" + sfx(T, "randomNormal"), blocks, 1, 256, 0, new Kernels.Args().ptr(T.address()).l(n).l(seed).f(mean).f(std));
    }

    /** The dropout rule the kernel implements (CpuBackend's formula): element {@code i} is kept when this is ≥ p. */
    public static float dropoutUniform(long seed, long i) {
        long z = seed * 0x9E3779B97F4A7C15L + i * 0xBF58476D1CE4E5B9L + 0x94D049BB133111EBL;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        z ^= z >>> 31;
        return (float) (z >>> 40) * (1.0f / 16777216.0f);
    }

    // ================================================================== optimizer

    @Override
    public void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2,
                      float eps, float weightDecay, int step, float gradScale) {
        bind();
        GpuTensor P = own(param), G = own(grad), M = own(m), V = own(v);
        needF32("adamw", "param", P);
        needF32("adamw", "m", M);
        needF32("adamw", "v", V);
        sameCount("adamw", P, G);
        sameCount("adamw", P, M);
        sameCount("adamw", P, V);
        if (step < 1) throw new IllegalArgumentException("adamw: step is 1-based, got " + step);
        if (P.numel() == 0) return;
        float bc1 = (float) (1 - Math.pow(beta1, step)), bc2 = (float) (1 - Math.pow(beta2, step));
        long n = P.numel();
        int blocks = (int) Math.max(1, Math.min(SM_BLOCKS, (n + 255) / 256));
        launch("adamw_" + sfx(G, "adamw"), blocks, 1, 256, 0, new Kernels.Args().ptr(P.address()).ptr(G.address())
                .ptr(M.address()).ptr(V.address()).l(n).f(lr).f(beta1).f(beta2).f(eps).f(weightDecay).f(bc1).f(bc2).f(gradScale));
    }

    /** Elements per tile and threads per block of the multi-tensor kernels (MT_TILE, MT_THREADS in sparse.cu). */
    static final int MT_TILE = 4096, MT_THREADS = 256;

    /**
     * The fused multi-tensor AdamW group: the whole optimizer phase in two launches. A device table
     * of the slots' addresses (struct MultiSlot in sparse.cu, 64 bytes a slot; slots without elements
     * are left out) is written once, here, outside any graph capture; each slot is cut into
     * {@link #MT_TILE}-element tiles numbered across slots and one 256-thread block handles a tile, so
     * the grid is (total elements / 4096) blocks whatever the mix of sizes — 27M parameters
     * (Llama-3-8B, r=32 on q,k,v,o: 256 tensors of 32k–131k) give ~6.6k blocks, 84M (all seven, 448
     * tensors) ~20k, several waves on an H200. {@link #gradSumOfSquares} is one {@code sumsq_multi}
     * launch (per-tile double partials, summed in tile order by the last block: deterministic) and an
     * 8-byte read; {@link #step} is one {@code adamw_multi} launch that also refreshes compute copies
     * and zeroes the gradients it read, and may be captured in a CUDA graph. The slots' tensors must
     * stay open while the group is used (their addresses are in the table).
     */
    private final class AdamwMulti implements AdamwGroup {
        private final int size, live;
        private final long tiles;
        private final Tensor table;    // MultiSlot[live]
        private final Tensor scratch;  // double partial[tiles], double out, uint counter (+pad)

        AdamwMulti(List<Tensor[]> slotsIn) {
            List<Tensor[]> slots = AdamwGroup.checkSlots(GpuBackend.this, slotsIn);
            size = slots.size();
            long[] words = new long[slots.size() * 8];
            int k = 0;
            long t0 = 0;
            for (Tensor[] s : slots) {
                GpuTensor P = own(s[0]), G = own(s[1]), M = own(s[2]), V = own(s[3]);
                GpuTensor C = s.length == 5 && s[4] != s[0] ? own(s[4]) : null;
                long n = P.numel();
                if (n == 0) continue;
                int copyType = C == null ? 0 : switch (C.dtype()) {
                    case BF16 -> 1;
                    case F16 -> 2;
                    case F32 -> 3;
                    case I32 -> throw new IllegalStateException("checked by checkSlots");
                };
                boolean vec = n % 4 == 0 && aligned(P, G, M, V) && (C == null || aligned(C));
                long[] w = {P.address(), G.address(), M.address(), V.address(), C == null ? 0L : C.address(), n, t0,
                        (copyType & 0xffffffffL) | ((vec ? 1L : 0L) << 32)};
                System.arraycopy(w, 0, words, k * 8, 8);
                k++;
                t0 += (n + MT_TILE - 1) / MT_TILE;
            }
            live = k;
            tiles = t0;
            if (tiles > Integer.MAX_VALUE) throw new IllegalArgumentException("adamw group: " + tiles + " tiles exceed one launch's grid");
            int[] ints = new int[Math.max(2, live * 16)];
            for (int i = 0; i < live * 8; i++) {
                ints[2 * i] = (int) words[i];
                ints[2 * i + 1] = (int) (words[i] >>> 32);
            }
            table = empty(DType.I32, ints.length);
            scratch = empty(DType.I32, (int) (2 * tiles + 4));
            copyFromHost(table, ints);
            fill(scratch, 0f);  // the counter starts at 0; the last block of each launch resets it
        }

        @Override public int size() { return size; }

        @Override
        public double gradSumOfSquares() {
            bind();
            noCapture("adamw group gradSumOfSquares");
            if (tiles == 0) return 0.0;
            long part = g(scratch).address(), out = part + 8 * tiles, counter = out + 8;
            launch("sumsq_multi", (int) tiles, 1, MT_THREADS, 0, new Kernels.Args().ptr(out).ptr(part).ptr(counter)
                    .ptr(g(table).address()).i(live));
            ByteBuffer buf = ByteBuffer.allocateDirect(8).order(ByteOrder.LITTLE_ENDIAN);
            cuMemcpyDtoHAsync(Pointer.to(buf), new DevPtr().plus(out), 8, stream);
            cuStreamSynchronize(stream);
            return buf.getDouble(0);
        }

        @Override
        public void step(float lr, float beta1, float beta2, float eps, float weightDecay, int step, float gradScale, boolean zeroGrads) {
            bind();
            if (step < 1) throw new IllegalArgumentException("adamw: step is 1-based, got " + step);
            if (tiles == 0) return;
            float bc1 = (float) (1 - Math.pow(beta1, step)), bc2 = (float) (1 - Math.pow(beta2, step));
            launch("adamw_multi", (int) tiles, 1, MT_THREADS, 0, new Kernels.Args().ptr(g(table).address()).i(live)
                    .f(lr).f(beta1).f(beta2).f(eps).f(weightDecay).f(bc1).f(bc2).f(gradScale).i(zeroGrads ? 1 : 0));
        }

        @Override
        public boolean canClipOnDevice() { return true; }

        /** Two launches, no host read: may be captured in a CUDA graph (sumsq_multi resets its own counter). */
        @Override
        public void clippedStep(Tensor hyper, float beta1, float beta2, float eps, float weightDecay, boolean zeroGrads) {
            bind();
            GpuTensor H = own(hyper);
            needF32("adamw group clippedStep", "hyper", H);
            needNumel("adamw group clippedStep", "hyper", H, 5);
            if (tiles == 0) return;
            long part = g(scratch).address(), out = part + 8 * tiles, counter = out + 8;
            launch("sumsq_multi", (int) tiles, 1, MT_THREADS, 0, new Kernels.Args().ptr(out).ptr(part).ptr(counter)
                    .ptr(g(table).address()).i(live));
            launch("adamw_multi_dev", (int) tiles, 1, MT_THREADS, 0, new Kernels.Args().ptr(g(table).address()).i(live)
                    .ptr(H.address()).ptr(out).f(beta1).f(beta2).f(eps).f(weightDecay).i(zeroGrads ? 1 : 0));
        }

        @Override
        public double lastSumOfSquares() {
            bind();
            noCapture("adamw group lastSumOfSquares");
            if (tiles == 0) return 0.0;
            long out = g(scratch).address() + 8 * tiles;
            ByteBuffer buf = ByteBuffer.allocateDirect(8).order(ByteOrder.LITTLE_ENDIAN);
            cuMemcpyDtoHAsync(Pointer.to(buf), new DevPtr().plus(out), 8, stream);
            cuStreamSynchronize(stream);
            return buf.getDouble(0);
        }

        @Override
        public void close() {
            table.close();
            scratch.close();
        }
    }

    /** The fused multi-tensor group ({@link AdamwMulti}); made outside any graph capture (it uploads its table). */
    @Override
    public AdamwGroup adamwGroup(List<Tensor[]> slots) {
        bind();
        noCapture("adamwGroup");
        return new AdamwMulti(slots);
    }

    // ================================================================== SparseLoRA

    @Override
    public void gatherRows(Tensor out, Tensor src, Tensor idx) {
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

    @Override
    public void scatterRows(Tensor out, Tensor src, Tensor idx, boolean accumulate) {
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

    @Override
    public void gatherCols(Tensor out, Tensor src, Tensor idx) {
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

    @Override
    public void scatterCols(Tensor out, Tensor src, Tensor idx, boolean accumulate) {
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

    @Override
    public void gatherRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
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

    /** Widest row whose inverse column map (16-bit entries) fits the 48 KiB of shared memory a launch gets by default. */
    static final int SCATTER_MAP_MAX_COLS = 24 * 1024;

    @Override
    public void scatterRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
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
        int smem = map ? (C * 2 + 15) / 16 * 16 : 0;
        launch("scatter_rows_cols_" + sfx(O, "scatterRowsCols") + "_" + sfx(S, "scatterRowsCols"), blocks, 1,
                rowThreads(vec ? C / 8 : C, 256), smem,
                new Kernels.Args().ptr(O.address()).ptr(S.address()).ptr(RI.address()).ptr(CI.address())
                        .i(n).i(R).i(C).i(k).i(rowsPerBlock).i(map ? 1 : 0).i(vec ? 1 : 0));
    }

    /** Widest index range padIndexSet's bitmap covers in the 48 KiB of shared memory a launch gets by default. */
    static final int PAD_INDEX_MAX_N = 48 * 1024 * 8;

    @Override
    public void padIndexSet(Tensor out, Tensor idx, int n) {
        bind();
        GpuTensor O = own(out), I = own(idx);
        needI32("padIndexSet", "out", O);
        needI32("padIndexSet", "idx", I);
        int k = (int) I.numel(), kp = (int) O.numel();
        if (kp < k || kp > n) throw new IllegalArgumentException("padIndexSet: " + k + " indices cannot be padded to " + kp + " of [0, " + n + ")");
        if (n > PAD_INDEX_MAX_N) throw new IllegalArgumentException("padIndexSet: range of " + n + " exceeds the kernel's bitmap of " + PAD_INDEX_MAX_N);
        if (kp == 0) return;
        int words = (n + 31) / 32;
        launch("pad_index_set", 1, 1, 256, words * 4, new Kernels.Args().ptr(O.address()).ptr(I.address()).i(k).i(kp).i(n));
    }

    @Override
    public void fillCols(Tensor t, int col0, float value) {
        bind();
        GpuTensor T = own(t);
        int C = T.dim(-1), R = (int) (T.numel() / Math.max(1, C));
        if (col0 < 0 || col0 > C) throw new IllegalArgumentException("fillCols: column " + col0 + " outside rows of " + C + " (" + T + ")");
        long work = (long) R * (C - col0);
        if (work == 0) return;
        launch("fill_cols_" + sfx(T, "fillCols"), (int) Math.max(1, Math.min(SM_BLOCKS * 4L, (work + 255) / 256)), 1, 256, 0,
                new Kernels.Args().ptr(T.address()).i(R).i(C).i(col0).f(value));
    }

    @Override
    public void scatterAddRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
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
        int smem = k > 0 ? (C * 2 + 15) / 16 * 16 : 0;
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
        boolean kernelTakes() { return !((k > 0 && C > SCATTER_MAP_MAX_COLS) || !joinFitsInt(na + np, C)); }

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

    @Override
    public void swigluJoin(Tensor h, Tensor g, Tensor u, Tensor addG, Tensor addU, Tensor addRows, Tensor hAdd,
                           Tensor plainRows, Tensor keptG, Tensor keptU, Tensor keptCols, Tensor hKept) {
        bind();
        GpuTensor H = own(h), G = own(g), U = own(u);
        JoinSets s = joinSets(G, addRows, plainRows, keptCols);
        int na = s.na(), np = s.np(), k = s.k(), C = s.C();
        if (!s.kernelTakes()) {
            org.sparselora.engine.backend.SparseOps.super.swigluJoin(h, g, u, addG, addU, addRows, hAdd, plainRows, keptG, keptU, keptCols, hKept);
            return;
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
    }

    @Override
    public void swigluBackwardJoin(Tensor dg, Tensor du, Tensor dh, Tensor g, Tensor u, Tensor addDh, Tensor addRows,
                                   Tensor dgAdd, Tensor duAdd, Tensor plainRows, Tensor keptDh, Tensor keptCols,
                                   Tensor dgKept, Tensor duKept) {
        bind();
        GpuTensor DG = own(dg), DU = own(du), DH = own(dh), G = own(g), U = own(u);
        JoinSets s = joinSets(G, addRows, plainRows, keptCols);
        int na = s.na(), np = s.np(), k = s.k(), C = s.C();
        if (!s.kernelTakes()) {
            org.sparselora.engine.backend.SparseOps.super.swigluBackwardJoin(dg, du, dh, g, u, addDh, addRows, dgAdd, duAdd, plainRows, keptDh, keptCols, dgKept, duKept);
            return;
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
    }

    @Override
    public void columnNorms(Tensor out, Tensor x) {
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

    @Override
    public void sequenceMean(Tensor out, Tensor x, Tensor keyStart, int batch, int seqLen) {
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

    @Override
    public void maskPaddingRows(Tensor x, Tensor keyStart, int batch, int seqLen) {
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

    @Override
    public void topK(Tensor idx, Tensor scores, int k) {
        bind();
        GpuTensor I = own(idx), S = own(scores);
        needI32("topK", "idx", I);
        needF32("topK", "scores", S);
        int n = (int) S.numel();
        if (k < 0 || k > n) throw new IllegalArgumentException("topK: k = " + k + " outside [0, " + n + "]");
        needNumel("topK", "idx", I, k);
        if (k == 0) return;
        launchTopK(I, S, 1, n, k);
    }

    @Override
    public void topKRows(Tensor idx, Tensor scores, int k) {
        bind();
        GpuTensor I = own(idx), S = own(scores);
        needI32("topKRows", "idx", I);
        needF32("topKRows", "scores", S);
        if (S.rank() != 2) throw new IllegalArgumentException("topKRows: scores must be (rows, n), got " + S);
        int m = S.dim(0), n = S.dim(1);
        if (k < 0 || k > n) throw new IllegalArgumentException("topKRows: k = " + k + " outside [0, " + n + "]");
        needNumel("topKRows", "idx", I, (long) m * k);
        if (k == 0 || m == 0) return;
        launchTopK(I, S, m, n, k);
    }

    /** Largest row the register-resident top-k takes (1024 threads × 16 keys); longer rows use topk_f32. */
    static final int TOPK_REG_MAX = 1024 * 16;
    /** The register-resident top-k (default) or the first single-block kernel (kept for comparison and rows over TOPK_REG_MAX). */
    private boolean topKInRegisters = true;

    void setTopKInRegisters(boolean on) { topKInRegisters = on; }

    /** One block per row of (rows, n) scores into (rows, k) indices; same result from either kernel. */
    private void launchTopK(GpuTensor I, GpuTensor S, int rows, int n, int k) {
        if (!topKInRegisters || n > TOPK_REG_MAX) {
            launch("topk_f32", rows, 1, 1024, 0, new Kernels.Args().ptr(I.address()).ptr(S.address()).i(n).i(k));
            return;
        }
        int items = n <= 4096 ? 4 : 16;
        int threads = Math.max(32, ((n + items - 1) / items + 31) / 32 * 32);
        boolean vec = n % 4 == 0 && aligned(S);
        launch("topk_reg" + items + "_f32", rows, 1, threads, 0,
                new Kernels.Args().ptr(I.address()).ptr(S.address()).i(n).i(k).i(vec ? 1 : 0));
    }

    /** Largest predictor rank the fused low-rank norm kernels take (their Q column lives in registers). */
    static final int LOW_RANK_MAX = 32;
    /** lowRankColumnNorms through the Gram matrix (default) or by summing (t·q)² over the rows (the first fused form, kept for tests). */
    private boolean gramNorms = true;

    void setGramNorms(boolean on) { gramNorms = on; }

    /**
     * How the Gram form gets G_s = t_sᵀ·t_s: one cuBLAS GEMM per segment (the first form), one
     * strided-batched cuBLAS GEMM for all segments (when the t sit equally spaced, as the predictor
     * stacks them), or the chunked kernel pair lowrank_gram_part + lowrank_gram_part_norms (the default;
     * no cuBLAS, the chunk sums added in a fixed order).
     */
    enum GramMode { CUBLAS_EACH, CUBLAS_BATCHED, KERNEL }

    private GramMode gramMode = GramMode.KERNEL;

    void setGramMode(GramMode m) { gramMode = m; }

    GramMode gramMode() { return gramMode; }
    private static final int LR_COLS = 256, LR_ROWS = 64;

    @Override
    public void lowRankColumnNorms(Tensor[] outs, Tensor[] ts, Tensor[] qs) {
        bind();
        if (outs.length != ts.length || outs.length != qs.length)
            throw new IllegalArgumentException("lowRankColumnNorms: " + outs.length + " outputs, " + ts.length + " t, " + qs.length + " Q");
        if (outs.length == 0) return;
        if (outs.length > 3) {  // the kernel takes three segments: do the rest in further launches
            lowRankColumnNorms(Arrays.copyOf(outs, 3), Arrays.copyOf(ts, 3), Arrays.copyOf(qs, 3));
            lowRankColumnNorms(Arrays.copyOfRange(outs, 3, outs.length), Arrays.copyOfRange(ts, 3, ts.length), Arrays.copyOfRange(qs, 3, qs.length));
            return;
        }
        GpuTensor[] O = new GpuTensor[outs.length], T = new GpuTensor[outs.length], Q = new GpuTensor[outs.length];
        int n = -1, r = -1, mTotal = 0;
        for (int i = 0; i < outs.length; i++) {
            O[i] = own(outs[i]); T[i] = own(ts[i]); Q[i] = own(qs[i]);
            needF32("lowRankColumnNorms", "outs[" + i + "]", O[i]);
            if (T[i].rank() != 2 || Q[i].rank() != 2 || T[i].dim(1) != Q[i].dim(0) || O[i].numel() != Q[i].dim(1))
                throw new IllegalArgumentException("lowRankColumnNorms: segment " + i + " has t " + T[i] + ", Q " + Q[i] + ", out " + O[i]);
            if (i == 0) { n = T[i].dim(0); r = T[i].dim(1); }
            else if (T[i].dim(0) != n || T[i].dim(1) != r)
                throw new IllegalArgumentException("lowRankColumnNorms: every t must be (" + n + ", " + r + "), segment " + i + " is " + T[i]);
            mTotal += Q[i].dim(1);
        }
        DType dt = T[0].dtype();
        boolean fused = r <= LOW_RANK_MAX && (dt == DType.BF16 || dt == DType.F32);
        for (int i = 0; i < outs.length; i++) fused &= T[i].dtype() == dt && Q[i].dtype() == dt;
        if (!fused) { org.sparselora.engine.backend.SparseOps.super.lowRankColumnNorms(outs, ts, qs); return; }
        if (mTotal == 0) return;
        if (n == 0 || r == 0) { for (GpuTensor o : O) fill(o, 0f); return; }
        int gx = (mTotal + LR_COLS - 1) / LR_COLS;
        if (gramNorms) {
            // ‖t·q_c‖² = q_cᵀ·(tᵀt)·q_c: one (r,r) Gram matrix per segment, then r² work per column
            // (not n·r): the attention predictor's q̂/k̂/v̂ norms over thousands of tokens cost a few µs
            int E = outs.length * r * r;
            if (gramMode == GramMode.KERNEL && E <= 1024) {
                // rows spread over up to 64 blocks of at least 64 rows each (measured at the 8B shape,
                // 4096 tokens: 64 chunks 10.9 µs for both kernels, 32 chunks of 128 rows 13.3 µs)
                int chunks = Math.max(1, Math.min(64, (n + 63) / 64)), rowsPerChunk = (n + chunks - 1) / chunks;
                chunks = (n + rowsPerChunk - 1) / rowsPerChunk;
                long part = scratch("lowrank.gram.part", (long) chunks * E * 4);
                launch("lowrank_gram_part_" + sfx(T[0], "lowRankColumnNorms"), chunks, 1, Math.max(128, (E + 31) / 32 * 32), 0,
                        segments(O, T, Q).ptr(part).i(n).i(r).i(rowsPerChunk));
                launch("lowrank_gram_part_norms_" + sfx(Q[0], "lowRankColumnNorms"), gx, 1, LR_COLS, 0,
                        segments(O, T, Q).ptr(part).i(chunks).i(r).i(mTotal));
                return;
            }
            long gAddr = scratch("lowrank.gram", 3L * LOW_RANK_MAX * LOW_RANK_MAX * 4);
            long tStride = outs.length > 1 ? T[1].address() - T[0].address() : 0;
            boolean batched = gramMode != GramMode.CUBLAS_EACH && outs.length > 1 && tStride >= (long) n * r * dt.bytes
                    && tStride % dt.bytes == 0;
            for (int i = 0; batched && i < outs.length; i++) batched = T[i].address() == T[0].address() + i * tStride;
            if (batched) {  // G_i = t_iᵀ·t_i for every segment in one strided-batched GEMM
                gemmBatched(true, false, r, r, n, 1f, T[0].address(), dt, r, tStride / dt.bytes, T[0].address(), dt, r, tStride / dt.bytes,
                        0f, gAddr, DType.F32, r, (long) r * r, outs.length);
            } else {
                for (int i = 0; i < outs.length; i++) {
                    GpuTensor G = new GpuTensor(this, DType.F32, new int[] {r, r}, new DevPtr().plus(gAddr + (long) i * r * r * 4), null);
                    matmul(G, T[i], true, T[i], false, 1f, 0f);
                }
            }
            launch("lowrank_gram_norms_" + sfx(Q[0], "lowRankColumnNorms"), gx, 1, LR_COLS, 0,
                    segments(O, T, Q).ptr(gAddr).i(r).i(mTotal));
            return;
        }
        int chunks = (n + LR_ROWS - 1) / LR_ROWS;
        long part = chunks > 1 ? scratch("lowrank.part", (long) chunks * mTotal * 4) : 0;
        launch("lowrank_colsumsq_" + sfx(T[0], "lowRankColumnNorms"), gx, chunks, LR_COLS, 0,
                segments(O, T, Q).ptr(part).i(n).i(r).i(mTotal));
        if (chunks > 1)
            launch("lowrank_norm_finish", gx, 1, LR_COLS, 0, segments(O, T, Q).ptr(part).i(chunks).i(mTotal));
    }

    /** The flat segment parameters of the low-rank norm kernels: three t, three Q, three outputs, three widths, the count. */
    private static Kernels.Args segments(GpuTensor[] O, GpuTensor[] T, GpuTensor[] Q) {
        Kernels.Args a = new Kernels.Args();
        for (int i = 0; i < 3; i++) a.ptr(i < T.length ? T[i].address() : 0L);
        for (int i = 0; i < 3; i++) a.ptr(i < Q.length ? Q[i].address() : 0L);
        for (int i = 0; i < 3; i++) a.ptr(i < O.length ? O[i].address() : 0L);
        for (int i = 0; i < 3; i++) a.i(i < Q.length ? Q[i].dim(1) : 0);
        return a.i(O.length);
    }

    /** lowRankSwigluColumnNorms over ≤ LR_ROWS rows through lowrank_swiglu_small (default) or the segment-struct kernel. */
    private boolean swigluSmall = true;

    void setSwigluSmall(boolean on) { swigluSmall = on; }

    @Override
    public void lowRankSwigluColumnNorms(Tensor out, Tensor tg, Tensor qg, Tensor tu, Tensor qu) {
        bind();
        GpuTensor O = own(out), TG = own(tg), QG = own(qg), TU = own(tu), QU = own(qu);
        needF32("lowRankSwigluColumnNorms", "out", O);
        if (TG.rank() != 2 || TU.rank() != 2 || QG.rank() != 2 || QU.rank() != 2 || !Arrays.equals(TG.shape(), TU.shape())
                || !Arrays.equals(QG.shape(), QU.shape()) || TG.dim(1) != QG.dim(0) || O.numel() != QG.dim(1))
            throw new IllegalArgumentException("lowRankSwigluColumnNorms: out " + O + ", tg " + TG + ", qg " + QG + ", tu " + TU + ", qu " + QU);
        int n = TG.dim(0), r = TG.dim(1), m = QG.dim(1);
        DType dt = TG.dtype();
        boolean fused = r <= LOW_RANK_MAX && (dt == DType.BF16 || dt == DType.F32)
                && TU.dtype() == dt && QG.dtype() == dt && QU.dtype() == dt;
        if (!fused) { org.sparselora.engine.backend.SparseOps.super.lowRankSwigluColumnNorms(out, tg, qg, tu, qu); return; }
        if (m == 0) return;
        if (n == 0 || r == 0) { fill(O, 0f); return; }
        if (n <= LR_ROWS && swigluSmall) {   // the B sequence means: one pass, flat parameters
            launch("lowrank_swiglu_small_r" + (r <= 8 ? 8 : 32) + "_" + sfx(TG, "lowRankSwigluColumnNorms"), (m + 127) / 128, 1, 128, 0,
                    new Kernels.Args().ptr(O.address()).ptr(TG.address()).ptr(TU.address()).ptr(QG.address()).ptr(QU.address())
                            .i(n).i(r).i(m));
            return;
        }
        int chunks = (n + LR_ROWS - 1) / LR_ROWS, gx = (m + LR_COLS - 1) / LR_COLS;
        long part = chunks > 1 ? scratch("lowrank.part", (long) chunks * m * 4) : 0;
        // segment parameters: t = (tg, tu), Q = (qg, qu), the one output, width m
        Kernels.Args a = new Kernels.Args().ptr(TG.address()).ptr(TU.address()).ptr(0L).ptr(QG.address()).ptr(QU.address()).ptr(0L)
                .ptr(O.address()).ptr(0L).ptr(0L).i(m).i(0).i(0).i(1);
        launch("lowrank_swiglu_colsumsq_" + sfx(TG, "lowRankSwigluColumnNorms"), gx, chunks, LR_COLS, 0, a.ptr(part).i(n).i(r));
        if (chunks > 1)
            launch("lowrank_norm_finish", gx, 1, LR_COLS, 0, segments(new GpuTensor[] {O}, new GpuTensor[] {TG}, new GpuTensor[] {QG})
                    .ptr(part).i(chunks).i(m));
    }

    @Override
    public void kvChannelScores(Tensor scores, Tensor qNorms, Tensor kNorms, int kvHeads, int groupSize, int headDim) {
        bind();
        GpuTensor S = own(scores), QN = own(qNorms), KN = own(kNorms);
        needF32("kvChannelScores", "scores", S);
        needF32("kvChannelScores", "qNorms", QN);
        needF32("kvChannelScores", "kNorms", KN);
        needNumel("kvChannelScores", "scores", S, (long) kvHeads * headDim);
        needNumel("kvChannelScores", "kNorms", KN, (long) kvHeads * headDim);
        needNumel("kvChannelScores", "qNorms", QN, (long) kvHeads * groupSize * headDim);
        int n = kvHeads * headDim;
        if (n == 0) return;
        launch("kv_channel_scores", (n + 255) / 256, 1, 256, 0, new Kernels.Args().ptr(S.address()).ptr(QN.address())
                .ptr(KN.address()).i(kvHeads).i(groupSize).i(headDim));
    }

    @Override
    public void expandGroupChannels(Tensor out, Tensor kvIdx, int groupSize, int headDim) {
        bind();
        GpuTensor O = own(out), I = own(kvIdx);
        needI32("expandGroupChannels", "out", O);
        needI32("expandGroupChannels", "kvIdx", I);
        int k = (int) I.numel();
        needNumel("expandGroupChannels", "out", O, (long) k * groupSize);
        long n = (long) k * groupSize;
        if (n == 0) return;
        launch("expand_group_channels", (int) ((n + 255) / 256), 1, 256, 0,
                new Kernels.Args().ptr(O.address()).ptr(I.address()).i(k).i(groupSize).i(headDim));
    }

    @Override
    public void expandGroupChannelsRows(Tensor out, Tensor kvIdx, int groupSize, int headDim) {
        bind();
        GpuTensor O = own(out), I = own(kvIdx);
        needI32("expandGroupChannelsRows", "out", O);
        needI32("expandGroupChannelsRows", "kvIdx", I);
        if (I.rank() != 2) throw new IllegalArgumentException("expandGroupChannelsRows: kvIdx must be (rows, k), got " + I);
        int rows = I.dim(0), k = I.dim(1);
        needNumel("expandGroupChannelsRows", "out", O, (long) rows * k * groupSize);
        long n = (long) k * groupSize;
        if (n == 0 || rows == 0) return;
        launch("expand_group_channels_rows", (int) ((n + 255) / 256), rows, 256, 0,
                new Kernels.Args().ptr(O.address()).ptr(I.address()).i(k).i(groupSize).i(headDim));
    }

    // ================================================================== graphs, timing

    /** A captured and instantiated CUDA graph; {@link #replay()} launches it on the backend's stream. */
    public final class Graph implements org.sparselora.engine.backend.GraphCapture.Captured {
        private final CUgraph graph;
        private final CUgraphExec exec;
        private final DevicePool.Capture<DevPtr> blocks;  // tensor blocks its replays write (scratch and outputs)
        private boolean closed;

        private Graph(CUgraph graph, CUgraphExec exec, DevicePool.Capture<DevPtr> blocks) {
            this.graph = graph;
            this.exec = exec;
            this.blocks = blocks;
        }

        /** Queues one replay (asynchronous, like every other op). */
        @Override
        public void replay() {
            bind();
            if (closed) throw new IllegalStateException("graph closed");
            if (capturing) throw new IllegalStateException("a graph cannot be replayed while another is being captured");
            cuGraphLaunch(exec, stream);
        }

        @Override
        public void close() {
            if (closed || GpuBackend.this.closed) return;
            closed = true;
            bind();
            // a replay may still be running: its blocks go back to the pool only after it is done
            // (the pool's reuse is stream-ordered, so later work queued on this stream is safe anyway)
            cuGraphExecDestroy(exec);
            cuGraphDestroy(graph);
            pool.returnGraphBlocks(blocks);
        }
    }

    @Override
    public boolean canCapture() { return true; }

    /**
     * Starts recording every op queued from now on into a graph instead of running it (relaxed
     * capture mode). Ops that wait for the device or upload from the host throw while capturing;
     * tensors may be made and closed: blocks acquired or released during the capture stay the
     * graph's until it is closed ({@link DevicePool}).
     */
    @Override
    public void beginCapture() {
        bind();
        if (capturing) throw new IllegalStateException("a CUDA graph capture is already running");
        cuStreamBeginCapture(stream, CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED);
        capturing = true;
        pool.beginCapture();
    }

    /** Ends the capture and returns the instantiated graph. */
    @Override
    public Graph endCapture() {
        bind();
        if (!capturing) throw new IllegalStateException("no CUDA graph capture is running");
        CUgraph graph = new CUgraph();
        capturing = false;
        DevicePool.Capture<DevPtr> blocks = pool.endCapture();
        try {
            cuStreamEndCapture(stream, graph);
            CUgraphExec exec = new CUgraphExec();
            cuGraphInstantiate(exec, graph, 0L);
            return new Graph(graph, exec, blocks);
        } catch (RuntimeException e) {
            pool.returnGraphBlocks(blocks);
            throw e;
        }
    }

    @Override
    public void abortCapture() {
        if (!capturing) return;
        try {
            endCapture().close();
        } catch (RuntimeException ignored) {
            // an invalidated capture fails to end or instantiate; the stream has left capture mode either way
        }
    }

    /** Runs {@code work} (which queues ops) and returns the device time it took in milliseconds, from CUDA events. */
    public float timeMs(Runnable work) {
        bind();
        noCapture("timeMs");
        CUevent a = new CUevent(), b = new CUevent();
        cuEventCreate(a, CUevent_flags.CU_EVENT_DEFAULT);
        cuEventCreate(b, CUevent_flags.CU_EVENT_DEFAULT);
        try {
            cuEventRecord(a, stream);
            work.run();
            cuEventRecord(b, stream);
            cuEventSynchronize(b);
            float[] ms = {0};
            cuEventElapsedTime(ms, a, b);
            return ms[0];
        } finally {
            cuEventDestroy(a);
            cuEventDestroy(b);
        }
    }

    @Override
    public void close() {
        if (closed) return;
        bind();
        cuStreamSynchronize(stream);
        cublas.close();
        kernels.close();
        pool.close();
        for (DevPtr p : scratch.values()) cuMemFree(p);
        for (DevPtr p : retired) cuMemFree(p);
        cuMemFree(cublasWorkspace);
        scratch.clear();
        retired.clear();
        cuStreamDestroy(stream);
        CUdevice dev = new CUdevice();
        cuDeviceGet(dev, device);
        cuDevicePrimaryCtxRelease(dev);
        closed = true;
    }
}
