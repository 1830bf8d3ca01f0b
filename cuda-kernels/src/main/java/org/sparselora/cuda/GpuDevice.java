package org.sparselora.cuda;

import static jcuda.driver.JCudaDriver.cuCtxSetCurrent;
import static jcuda.driver.JCudaDriver.cuDeviceGet;
import static jcuda.driver.JCudaDriver.cuDeviceGetAttribute;
import static jcuda.driver.JCudaDriver.cuDeviceGetName;
import static jcuda.driver.JCudaDriver.cuDevicePrimaryCtxRelease;
import static jcuda.driver.JCudaDriver.cuDevicePrimaryCtxRetain;
import static jcuda.driver.JCudaDriver.cuStreamCreate;
import static jcuda.driver.JCudaDriver.cuStreamDestroy;
import static jcuda.driver.JCudaDriver.cuStreamSynchronize;

import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdevice_attribute;
import jcuda.driver.CUstream_flags;
import jcuda.driver.JCudaDriver;

/**
 * One CUDA device as a {@link GpuBackend} holds it: its primary context, the one non-blocking
 * stream all the backend's work is queued on, the kernel launcher, and the state every op checks
 * first — which thread last made the context current, whether a graph is being captured, whether the
 * backend is closed.
 */
final class GpuDevice {
    final int ordinal;
    final String name;
    final int computeMajor, computeMinor;
    /** Streaming multiprocessors of the device (sizes grids that should be exactly one resident wave). */
    final int smCount;
    final CUcontext context = new CUcontext();
    final CudaStream stream = new CudaStream();
    final Kernels kernels;
    private volatile Thread boundThread;
    /** A CUDA graph capture is running on {@link #stream} (ops that wait for the device refuse). */
    boolean capturing;
    boolean closed;

    GpuDevice(int device) {
        Gpu.Availability a = Gpu.check();
        if (!a.available()) throw new IllegalStateException("no usable CUDA GPU: " + a.reason());
        if (device < 0 || device >= a.deviceCount())
            throw new IllegalArgumentException("CUDA device " + device + " does not exist (" + a.deviceCount() + " visible)");
        JCudaDriver.setExceptionsEnabled(true);
        this.ordinal = device;
        CUdevice dev = new CUdevice();
        cuDeviceGet(dev, device);
        byte[] nameBytes = new byte[256];
        cuDeviceGetName(nameBytes, nameBytes.length, dev);
        int len = 0;
        while (len < nameBytes.length && nameBytes[len] != 0) len++;
        name = new String(nameBytes, 0, len);
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
    }

    /** Makes the context current on the calling thread (a backend is driven by one thread at a time, not always the same one). */
    void bind() {
        if (closed) throw new IllegalStateException("GpuBackend cuda:" + ordinal + " is closed");
        Thread t = Thread.currentThread();
        if (boundThread != t) {
            cuCtxSetCurrent(context);
            boundThread = t;
        }
    }

    void noCapture(String what) {
        if (capturing) throw new IllegalStateException(what + " waits for the device and cannot run while a CUDA graph is being captured");
    }

    /** Waits for the stream's queued work (the first step of closing the backend). */
    void drain() { cuStreamSynchronize(stream); }

    /** Unloads the kernels, destroys the stream and releases the primary context; the backend is closed after this. */
    void close() {
        kernels.close();
        cuStreamDestroy(stream);
        CUdevice dev = new CUdevice();
        cuDeviceGet(dev, ordinal);
        cuDevicePrimaryCtxRelease(dev);
        closed = true;
    }
}
