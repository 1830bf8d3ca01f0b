package org.sparselora.cuda;

import static jcuda.driver.JCudaDriver.cuEventCreate;
import static jcuda.driver.JCudaDriver.cuEventDestroy;
import static jcuda.driver.JCudaDriver.cuEventElapsedTime;
import static jcuda.driver.JCudaDriver.cuEventRecord;
import static jcuda.driver.JCudaDriver.cuEventSynchronize;
import static jcuda.driver.JCudaDriver.cuGraphInstantiate;
import static jcuda.driver.JCudaDriver.cuStreamBeginCapture;
import static jcuda.driver.JCudaDriver.cuStreamEndCapture;

import jcuda.driver.CUevent;
import jcuda.driver.CUevent_flags;
import jcuda.driver.CUgraph;
import jcuda.driver.CUgraphExec;
import jcuda.driver.CUstreamCaptureMode;

/**
 * A {@link GpuBackend}'s CUDA graph capture (the stream's ops recorded into a graph, the tensor
 * blocks they touch reserved for it by the {@link DevicePool}) and its device timing with events.
 */
final class GpuGraphs extends GpuOps {
    private final GpuMemory memory;

    GpuGraphs(GpuBackend owner, GpuDevice dev, GpuMemory memory) {
        super(owner, dev);
        this.memory = memory;
    }

    void beginCapture() {
        bind();
        if (dev.capturing) throw new IllegalStateException("a CUDA graph capture is already running");
        cuStreamBeginCapture(stream, CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED);
        dev.capturing = true;
        memory.pool.beginCapture();
    }

    GpuBackend.Graph endCapture() {
        bind();
        if (!dev.capturing) throw new IllegalStateException("no CUDA graph capture is running");
        CUgraph graph = new CUgraph();
        dev.capturing = false;
        DevicePool.Capture<DevPtr> blocks = memory.pool.endCapture();
        try {
            cuStreamEndCapture(stream, graph);
            CUgraphExec exec = new CUgraphExec();
            cuGraphInstantiate(exec, graph, 0L);
            return owner.new Graph(graph, exec, blocks);
        } catch (RuntimeException e) {
            memory.pool.returnGraphBlocks(blocks);
            throw e;
        }
    }

    void abortCapture() {
        if (!dev.capturing) return;
        try {
            owner.endCapture().close();
        } catch (RuntimeException ignored) {
            // an invalidated capture fails to end or instantiate; the stream has left capture mode either way
        }
    }

    float timeMs(Runnable work) {
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
}
