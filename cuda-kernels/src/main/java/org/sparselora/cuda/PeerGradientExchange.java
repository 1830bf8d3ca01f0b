package org.sparselora.cuda;

import static jcuda.driver.JCudaDriver.cuCtxEnablePeerAccess;
import static jcuda.driver.JCudaDriver.cuCtxSetCurrent;
import static jcuda.driver.JCudaDriver.cuDeviceCanAccessPeer;
import static jcuda.driver.JCudaDriver.cuDeviceGet;
import static jcuda.driver.JCudaDriver.cuMemcpyPeerAsync;
import static jcuda.driver.JCudaDriver.cuStreamSynchronize;

import jcuda.CudaException;
import jcuda.driver.CUdevice;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.train.GradientExchange;
import org.sparselora.engine.train.GradientExchanges;

/**
 * The in-process gradient all-reduce across {@link GpuBackend}s (one per worker, each on its own
 * GPU or sharing one): all work is queued on worker 0's stream in worker 0's context — for each
 * worker w = 1 … N−1 in order, a peer copy ({@code cuMemcpyPeerAsync}) of w's flat gradient buffer
 * into a staging buffer on worker 0's device and one {@code axpy(1)} into worker 0's buffer (so the
 * sum is added in worker order, deterministic and equal to the host path's float sum), then a peer
 * copy of the sum back into every other worker's buffer, and one stream synchronisation. Where the
 * driver reports peer access between the two devices it is enabled from worker 0's context (NVLink
 * copies instead of staging through the host); no NCCL and no multicast objects are used.
 *
 * <p>Threading: {@link #allReduce} runs on the coordinator's thread. It never calls another
 * worker's backend (whose methods bind that backend's context to the calling thread); it makes
 * worker 0's context current and issues only driver copies for the others. The workers have synced
 * their streams at the end of their backward passes and wait for the round's reply, so nothing
 * else touches the buffers meanwhile.
 */
public final class PeerGradientExchange implements GradientExchange {
    private final GpuTensor[] grads;
    private GpuTensor staging;           // on worker 0's device, numel of one buffer
    private GpuBackend stagingOwner;
    private boolean peersChecked;
    private int peerLinks;               // device pairs with peer access enabled (for the report)

    public PeerGradientExchange(int workers) {
        if (workers < 1) throw new IllegalArgumentException("workers must be ≥ 1, got " + workers);
        this.grads = new GpuTensor[workers];
    }

    @Override
    public int workers() { return grads.length; }

    @Override
    public synchronized void register(int worker, Tensor flatGrads) {
        if (!(flatGrads instanceof GpuTensor g))
            throw new IllegalArgumentException("worker " + worker + "'s gradients are not on a GPU backend: " + Tensor.describe(flatGrads));
        GradientExchanges.checkRegistration(grads, worker, g);
        grads[worker] = g;
        peersChecked = false;   // a replacement worker: its backend may be new (same primary context)
    }

    /** Device pairs (0, w) with peer access enabled at the last check. */
    public synchronized int peerLinks() { return peerLinks; }

    @Override
    public void allReduce() {
        GpuTensor[] g;
        synchronized (this) {
            Tensor[] t = GradientExchanges.registered(grads);
            g = new GpuTensor[t.length];
            for (int i = 0; i < t.length; i++) g[i] = (GpuTensor) t[i];
        }
        if (g.length == 1) return;
        GpuBackend be0 = (GpuBackend) g[0].backend();
        cuCtxSetCurrent(be0.context());
        synchronized (this) {
            if (!peersChecked) enablePeers(g);
            if (staging == null || stagingOwner != be0 || staging.numel() != g[0].numel()) {
                // the old staging buffer belonged to a replaced worker 0's backend, freed with it
                staging = (GpuTensor) be0.empty(DType.F32, (int) g[0].numel());
                stagingOwner = be0;
            }
        }
        long bytes = g[0].bytes();
        CudaStream s = be0.stream();
        for (int w = 1; w < g.length; w++) {
            GpuBackend bw = (GpuBackend) g[w].backend();
            cuMemcpyPeerAsync(staging.ptr, be0.context(), g[w].ptr, bw.context(), bytes, s);
            be0.axpy(g[0], 1f, staging);   // same stream: ordered after the copy, before the next one
        }
        for (int w = 1; w < g.length; w++) {
            GpuBackend bw = (GpuBackend) g[w].backend();
            cuMemcpyPeerAsync(g[w].ptr, bw.context(), g[0].ptr, be0.context(), bytes, s);
        }
        cuStreamSynchronize(s);
    }

    /** Enables worker 0's context to reach each other worker's device where the driver allows it. */
    private void enablePeers(GpuTensor[] g) {
        GpuBackend be0 = (GpuBackend) g[0].backend();
        int links = 0;
        for (int w = 1; w < g.length; w++) {
            GpuBackend bw = (GpuBackend) g[w].backend();
            if (bw.deviceOrdinal() == be0.deviceOrdinal()) continue;
            CUdevice d0 = new CUdevice(), dw = new CUdevice();
            cuDeviceGet(d0, be0.deviceOrdinal());
            cuDeviceGet(dw, bw.deviceOrdinal());
            int[] can = {0};
            cuDeviceCanAccessPeer(can, d0, dw);
            if (can[0] == 0) continue;   // cuMemcpyPeerAsync still works, staged by the driver
            try {
                cuCtxEnablePeerAccess(bw.context(), 0);
            } catch (CudaException e) {
                if (e.getMessage() == null || !e.getMessage().contains("ALREADY_ENABLED")) throw e;
            }
            links++;
        }
        peerLinks = links;
        peersChecked = true;
    }
}
