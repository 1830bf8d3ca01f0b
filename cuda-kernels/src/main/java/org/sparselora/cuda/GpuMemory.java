package org.sparselora.cuda;

import static jcuda.driver.JCudaDriver.cuMemAlloc;
import static jcuda.driver.JCudaDriver.cuMemFree;
import static jcuda.driver.JCudaDriver.cuMemcpyDtoDAsync;
import static jcuda.driver.JCudaDriver.cuMemcpyDtoHAsync;
import static jcuda.driver.JCudaDriver.cuMemcpyHtoDAsync;
import static jcuda.driver.JCudaDriver.cuMemsetD16Async;
import static jcuda.driver.JCudaDriver.cuMemsetD32Async;
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
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.io.Dtypes;
import org.sparselora.engine.io.HostTensor;

/**
 * A {@link GpuBackend}'s device memory and host transfers: tensors from a caching {@link DevicePool}
 * (closing one costs no driver call, so no device-wide sync; blocks closed during a graph capture
 * stay reserved for that graph), scratch buffers that grow on demand and are kept, the peak
 * accounting, uploads and downloads in bounded chunks, device-to-device copies and fills.
 */
final class GpuMemory extends GpuOps {
    private final Map<String, DevPtr> scratch = new HashMap<>();
    private final Map<String, Long> scratchBytes = new HashMap<>();
    private final List<DevPtr> retired = new ArrayList<>();
    final DevicePool<DevPtr> pool = new DevicePool<>(new DevicePool.Driver<>() {
        @Override public DevPtr alloc(long bytes) {
            DevPtr p = new DevPtr();
            cuMemAlloc(p, bytes);
            return p;
        }

        @Override public void free(DevPtr p) { cuMemFree(p); }
    });
    private long directBytes, peakBytes;  // directBytes: scratch and cuBLAS workspace (outside the pool)

    GpuMemory(GpuBackend owner, GpuDevice dev) { super(owner, dev); }

    /** The most device memory this backend has held at once, in bytes: pooled tensor blocks
     *  (in use or cached), scratch buffers and the cuBLAS workspace (like PyTorch's
     *  {@code max_memory_reserved}). */
    long peakMemory() { return peakBytes; }

    /** The most bytes of live tensors at once plus scratch and workspace (like PyTorch's
     *  {@code max_memory_allocated}: cached free blocks not counted). */
    long peakMemoryInUse() { return pool.peakInUseBytes() + directBytes; }

    /** Starts a new peak window for {@link #peakMemory()} and {@link #peakMemoryInUse()} at the current levels. */
    void resetPeakMemory() {
        pool.resetPeaks();
        peakBytes = pool.heldBytes() + directBytes;
    }

    /** Device memory this backend holds now, in bytes (same accounting as {@link #peakMemory()}). */
    long allocatedMemory() { return pool.heldBytes() + directBytes; }

    /** Bytes of live tensors now (pool blocks handed out and not yet closed). */
    long tensorMemoryInUse() { return pool.inUseBytes(); }

    /** Gives cached (unused) tensor blocks back to the driver; returns the bytes freed. */
    long trimMemory() {
        bind();
        noCapture("trimMemory");
        return pool.trim();
    }

    /** A driver allocation outside the pool (scratch, workspace): kept until {@link #close()}. */
    DevPtr alloc(long bytes) {
        DevPtr p = new DevPtr();
        cuMemAlloc(p, Math.max(bytes, 16));
        directBytes += Math.max(bytes, 16);
        notePeak();
        return p;
    }

    private void notePeak() { peakBytes = Math.max(peakBytes, pool.heldBytes() + directBytes); }

    /** A closed tensor's block goes back to the pool (no driver call, so no device sync). */
    void release(DevicePool.Block<DevPtr> block) {
        if (dev.closed) return;
        pool.release(block);
    }

    Tensor empty(DType dtype, int... shape) {
        bind();
        long n = 1;
        for (int d : shape) {
            if (d < 0) throw new IllegalArgumentException("negative dimension in shape " + Arrays.toString(shape));
            n *= d;
        }
        DevicePool.Block<DevPtr> block = pool.acquire(n * dtype.bytes);
        notePeak();
        return new GpuTensor(owner, dtype, shape, block.handle(), block);
    }

    /**
     * A device buffer for {@code key} of at least {@code bytes}; reused across calls (grows, never
     * shrinks). An outgrown buffer is retired, not freed, until {@link #close()}: a captured graph may
     * still point at it.
     */
    @Override
    long scratch(String key, long bytes) {
        Long have = scratchBytes.get(key);
        if (have != null && have >= bytes) return scratch.get(key).address();
        if (have != null) retired.add(scratch.get(key));
        long size = Math.max(bytes, have == null ? 0 : have + have / 2);
        DevPtr p = alloc(size);
        scratch.put(key, p);
        scratchBytes.put(key, size);
        return p.address();
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

    void copyFromHost(Tensor dst, float[] src) {
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

    void copyFromHost(Tensor dst, int[] src) {
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
    Tensor upload(HostTensor h, DType dtype) {
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
        return owner.fromFloats(h.toFloats(), dtype, h.shape());
    }

    float[] toFloats(Tensor t) {
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

    int[] toInts(Tensor t) {
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

    void copy(Tensor dst, Tensor src) {
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

    void fill(Tensor t, float value) {
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

    void synchronize() {
        bind();
        noCapture("synchronize");
        cuStreamSynchronize(stream);
    }

    /** Frees the pool's blocks and every scratch buffer, retired ones included (the stream is drained). */
    void close() {
        pool.close();
        for (DevPtr p : scratch.values()) cuMemFree(p);
        for (DevPtr p : retired) cuMemFree(p);
        scratch.clear();
        retired.clear();
    }
}
