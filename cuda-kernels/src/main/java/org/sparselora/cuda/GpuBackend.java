package org.sparselora.cuda;

import static jcuda.driver.JCudaDriver.cuGraphDestroy;
import static jcuda.driver.JCudaDriver.cuGraphExecDestroy;
import static jcuda.driver.JCudaDriver.cuGraphLaunch;

import java.util.List;
import jcuda.driver.CUcontext;
import jcuda.driver.CUgraph;
import jcuda.driver.CUgraphExec;
import org.sparselora.engine.backend.AdamwGroup;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.GraphCapture;
import org.sparselora.engine.backend.SparseOps;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
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
 * <p>Attention runs fused FlashAttention-2-style kernels that never write the score matrix (the
 * fastest measured) wherever they apply: bf16 tensors, 16-byte aligned, head dim 32, 64 or 128.
 * Everything else takes the GEMM path: head-major bf16 copies of q, k, v (so the G query heads of a KV group are one contiguous matrix and one
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
 *
 * <p>This class is the façade: each capability lives in its own class ({@link GpuMemory},
 * {@link GpuBlas}, {@link GpuLayers}, {@link GpuAttention}, {@link GpuOptimizer}, {@link GpuSparse},
 * {@link GpuPredictor}, {@link GpuGraphs}) over the shared {@link GpuDevice}, and the ops here
 * delegate. Where a capability's kernels do not take a call it says so and the engine's reference
 * default runs.
 */
public final class GpuBackend implements Backend, SparseOps, GraphCapture {
    final GpuDevice dev;
    final GpuMemory memory;
    final GpuBlas blas;
    final GpuLayers layers;
    final GpuAttention attention;
    final GpuOptimizer optimizer;
    final GpuSparse sparse;
    final GpuQuant quant;
    final GpuPredictor predictor;
    final GpuGraphs graphs;

    private GpuBackend(int device) {
        dev = new GpuDevice(device);
        memory = new GpuMemory(this, dev);
        blas = new GpuBlas(this, dev, memory);
        layers = new GpuLayers(this, dev);
        attention = new GpuAttention(this, dev);
        optimizer = new GpuOptimizer(this, dev);
        sparse = new GpuSparse(this, dev);
        quant = new GpuQuant(this, dev);
        predictor = new GpuPredictor(this, dev);
        graphs = new GpuGraphs(this, dev, memory);
    }

    /** A backend on CUDA device {@code device}; throws with the reason when no usable GPU is there. */
    public static GpuBackend create(int device) { return new GpuBackend(device); }

    @Override public String name() { return "cuda:" + dev.ordinal; }

    /** The CUDA device ordinal (for {@link PeerGradientExchange}). */
    int deviceOrdinal() { return dev.ordinal; }

    /** The primary context this backend works in (for {@link PeerGradientExchange}'s peer copies). */
    CUcontext context() { return dev.context; }

    /** The backend's one stream (for {@link PeerGradientExchange}). */
    CudaStream stream() { return dev.stream; }

    @Override public DType computeType() { return DType.BF16; }

    /** The SparseLoRA ops ({@link SparseOps}) and graph capture run on this backend itself. */
    @Override public Backend backend() { return this; }

    public String deviceName() { return dev.name; }

    /** "9.0" for an H200. */
    public String computeCapability() { return dev.computeMajor + "." + dev.computeMinor; }

    /** The PTX flavour loaded: sm_90 or the portable compute_80. */
    public String ptxArch() { return dev.kernels.arch(); }

    /** A closed tensor's block goes back to the pool (no driver call, so no device sync). */
    void release(DevicePool.Block<DevPtr> block) { memory.release(block); }

    /** The most device memory this backend has held at once, in bytes: pooled tensor blocks
     *  (in use or cached), scratch buffers and the cuBLAS workspace (like PyTorch's
     *  {@code max_memory_reserved}). */
    public long peakMemory() { return memory.peakMemory(); }

    /** The most bytes of live tensors at once plus scratch and workspace (like PyTorch's
     *  {@code max_memory_allocated}: cached free blocks not counted). */
    public long peakMemoryInUse() { return memory.peakMemoryInUse(); }

    /** Starts a new peak window for {@link #peakMemory()} and {@link #peakMemoryInUse()} at the current levels. */
    public void resetPeakMemory() { memory.resetPeakMemory(); }

    /** Device memory this backend holds now, in bytes (same accounting as {@link #peakMemory()}). */
    public long allocatedMemory() { return memory.allocatedMemory(); }

    /** Bytes of live tensors now (pool blocks handed out and not yet closed). */
    public long tensorMemoryInUse() { return memory.tensorMemoryInUse(); }

    /** Gives cached (unused) tensor blocks back to the driver; returns the bytes freed. */
    public long trimMemory() { return memory.trimMemory(); }

    // ================================================================== memory: tensors, host transfers, copies

    @Override public Tensor empty(DType dtype, int... shape) { return memory.empty(dtype, shape); }
    @Override public void copyFromHost(Tensor dst, float[] src) { memory.copyFromHost(dst, src); }
    @Override public void copyFromHost(Tensor dst, int[] src) { memory.copyFromHost(dst, src); }

    /**
     * Uploads a host tensor (e.g. a slice of a memory-mapped safetensors file) into a new device
     * tensor of {@code dtype}; when the dtypes match the bytes go straight to the device.
     */
    public Tensor upload(HostTensor h, DType dtype) { return memory.upload(h, dtype); }

    @Override public float[] toFloats(Tensor t) { return memory.toFloats(t); }
    @Override public int[] toInts(Tensor t) { return memory.toInts(t); }
    @Override public void copy(Tensor dst, Tensor src) { memory.copy(dst, src); }
    @Override public void fill(Tensor t, float value) { memory.fill(t, value); }
    @Override public void synchronize() { memory.synchronize(); }

    // ================================================================== dense algebra

    @Override public void matmul(Tensor c, Tensor a, boolean transA, Tensor b, boolean transB, float alpha, float beta) {
        blas.matmul(c, a, transA, b, transB, alpha, beta);
    }

    /**
     * One cuBLAS strided-batched GEMM over the row blocks (B broadcast with stride 0) when a and b share
     * a GEMM dtype (bf16 or f32 with an F32 c); other combinations take the per-block default, whose
     * matmul converts operands.
     */
    @Override public void matmulRowBlocks(Tensor c, int cOff, int cStride, Tensor a, int aOff, int aStride, Tensor b,
                                          boolean transB, int blocks, int m, float alpha, float beta) {
        if (!blas.matmulRowBlocks(c, cOff, cStride, a, aOff, aStride, b, transB, blocks, m, alpha, beta))
            Backend.super.matmulRowBlocks(c, cOff, cStride, a, aOff, aStride, b, transB, blocks, m, alpha, beta);
    }

    /**
     * One cuBLAS strided-batched GEMM (A broadcast with stride 0) when the right operands and the
     * outputs are equally spaced, non-overlapping blocks of memory with one shape and dtype each (the
     * predictor stacks its factors that way); otherwise the per-product default.
     */
    @Override public void matmulSharedA(Tensor[] outs, Tensor a, Tensor[] bs) {
        if (!blas.matmulSharedA(outs, a, bs)) Backend.super.matmulSharedA(outs, a, bs);
    }

    @Override public void axpy(Tensor y, float alpha, Tensor x) { blas.axpy(y, alpha, x); }
    @Override public void scale(Tensor t, float s) { blas.scale(t, s); }
    @Override public void mul(Tensor out, Tensor a, Tensor b) { blas.mul(out, a, b); }
    @Override public double sumOfSquares(List<Tensor> tensors) { return blas.sumOfSquares(tensors); }

    // ================================================================== layers

    @Override public void embedding(Tensor out, Tensor ids, Tensor table) { layers.embedding(out, ids, table); }
    @Override public void rmsNorm(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps) { layers.rmsNorm(out, rstd, x, weight, eps); }
    @Override public void addRmsNorm(Tensor residual, Tensor out, Tensor rstd, Tensor delta, Tensor weight, float eps) {
        if (!layers.addRmsNorm(residual, out, rstd, delta, weight, eps))
            Backend.super.addRmsNorm(residual, out, rstd, delta, weight, eps);
    }

    @Override public void addRmsNormTo(Tensor residualOut, Tensor residualIn, Tensor out, Tensor rstd, Tensor delta,
                                       Tensor weight, float eps) {
        if (!layers.addRmsNormTo(residualOut, residualIn, out, rstd, delta, weight, eps))
            Backend.super.addRmsNormTo(residualOut, residualIn, out, rstd, delta, weight, eps);
    }

    @Override public void rmsNormBackward(Tensor dx, Tensor dout, Tensor x, Tensor weight, Tensor rstd, boolean accumulate) {
        layers.rmsNormBackward(dx, dout, x, weight, rstd, accumulate);
    }
    @Override public void rmsNormWeightGrad(Tensor dweight, Tensor dout, Tensor x, Tensor rstd) { layers.rmsNormWeightGrad(dweight, dout, x, rstd); }
    @Override public void embeddingBackward(Tensor dtable, Tensor dout, Tensor ids) { layers.embeddingBackward(dtable, dout, ids); }

    @Override public void rope(Tensor x, Tensor positions, Tensor cos, Tensor sin, int heads, int headDim, boolean inverse) {
        layers.rope(x, positions, cos, sin, heads, headDim, inverse);
    }

    /** Both rotations in one launch ({@code rope_qk_*}): 16-byte vector accesses when D % 16 == 0 and the tensors are aligned. */
    @Override public void ropeQK(Tensor q, Tensor k, Tensor positions, Tensor cos, Tensor sin, int heads, int kvHeads,
                                 int headDim, boolean inverse) {
        if (!layers.ropeQK(q, k, positions, cos, sin, heads, kvHeads, headDim, inverse))
            Backend.super.ropeQK(q, k, positions, cos, sin, heads, kvHeads, headDim, inverse);
    }

    @Override public void swiglu(Tensor out, Tensor gate, Tensor up) { layers.swiglu(out, gate, up); }
    @Override public void swigluBackward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up) { layers.swigluBackward(dgate, dup, dout, gate, up); }
    @Override public void crossEntropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, float gradScale) {
        layers.crossEntropy(losses, dlogits, logits, targets, gradScale);
    }

    @Override public void dropout(Tensor out, Tensor x, float p, long seed) { layers.dropout(out, x, p, seed); }

    /** The normal fill drawn on the device ({@code randn_*}: {@link org.sparselora.engine.backend.CounterRng#normal}'s rule). */
    @Override public void randomNormal(Tensor t, long seed, float mean, float std) { layers.randomNormal(t, seed, mean, std); }

    /** The dropout rule the kernel implements (CpuBackend's formula): element {@code i} is kept when this is ≥ p. */
    public static float dropoutUniform(long seed, long i) { return GpuLayers.dropoutUniform(seed, i); }

    // ================================================================== attention

    @Override public void attention(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyStart, int batch, int seqLen,
                                    int heads, int kvHeads, int headDim, float scale) {
        attention.attention(out, lse, q, k, v, keyStart, batch, seqLen, heads, kvHeads, headDim, scale);
    }

    @Override public void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse, Tensor q,
                                            Tensor k, Tensor v, Tensor keyStart, int batch, int seqLen, int heads, int kvHeads,
                                            int headDim, float scale) {
        attention.attentionBackward(dq, dk, dv, dout, out, lse, q, k, v, keyStart, batch, seqLen, heads, kvHeads, headDim, scale);
    }

    @Override public void attentionCached(Tensor out, Tensor q, Tensor kCache, Tensor vCache, int pos0, int heads, int kvHeads,
                                          int headDim, float scale) {
        attention.attentionCached(out, q, kCache, vCache, pos0, heads, kvHeads, headDim, scale);
    }

    @Override public void attentionCachedBatch(Tensor out, Tensor q, Tensor kCache, Tensor vCache, Tensor keyStart, int batch, int pos0,
                                               int heads, int kvHeads, int headDim, float scale) {
        attention.attentionCachedBatch(out, q, kCache, vCache, keyStart, batch, pos0, heads, kvHeads, headDim, scale);
    }

    // ================================================================== optimizer

    @Override public void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
                                float weightDecay, int step, float gradScale) {
        optimizer.adamw(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step, gradScale);
    }

    /** The fused multi-tensor group ({@link GpuOptimizer}: two launches a step); made outside any graph capture (it uploads its table). */
    @Override public AdamwGroup adamwGroup(List<Tensor[]> slots) { return optimizer.adamwGroup(slots); }

    // ================================================================== SparseLoRA: gathers, scatters, joined SwiGLU

    @Override public void gatherRows(Tensor out, Tensor src, Tensor idx) { sparse.gatherRows(out, src, idx); }
    @Override public void dequantizeNf4(Tensor out, Tensor packed, Tensor absmax) { quant.dequantize(out, packed, absmax); }
    @Override public void dequantizeNf4Rows(Tensor out, Tensor packed, Tensor absmax, Tensor rows, int cols) { quant.dequantizeRows(out, packed, absmax, rows, cols); }
    @Override public void dequantizeNf4Cols(Tensor out, Tensor packed, Tensor absmax, Tensor cols, int C) { quant.dequantizeCols(out, packed, absmax, cols, C); }
    @Override public void scatterRows(Tensor out, Tensor src, Tensor idx, boolean accumulate) { sparse.scatterRows(out, src, idx, accumulate); }
    @Override public void gatherCols(Tensor out, Tensor src, Tensor idx) { sparse.gatherCols(out, src, idx); }
    @Override public void scatterCols(Tensor out, Tensor src, Tensor idx, boolean accumulate) { sparse.scatterCols(out, src, idx, accumulate); }
    @Override public void gatherRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) { sparse.gatherRowsCols(out, src, rowIdx, colIdx); }
    @Override public void scatterRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) { sparse.scatterRowsCols(out, src, rowIdx, colIdx); }
    @Override public void padIndexSet(Tensor out, Tensor idx, int n) { sparse.padIndexSet(out, idx, n); }
    @Override public void fillCols(Tensor t, int col0, float value) { sparse.fillCols(t, col0, value); }
    @Override public void scatterAddRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) { sparse.scatterAddRowsCols(out, src, rowIdx, colIdx); }
    @Override public void swigluJoin(Tensor h, Tensor g, Tensor u, Tensor addG, Tensor addU, Tensor addRows, Tensor hAdd,
                                     Tensor plainRows, Tensor keptG, Tensor keptU, Tensor keptCols, Tensor hKept) {
        if (!sparse.swigluJoin(h, g, u, addG, addU, addRows, hAdd, plainRows, keptG, keptU, keptCols, hKept))
            SparseOps.super.swigluJoin(h, g, u, addG, addU, addRows, hAdd, plainRows, keptG, keptU, keptCols, hKept);
    }

    @Override public void swigluBackwardJoin(Tensor dg, Tensor du, Tensor dh, Tensor g, Tensor u, Tensor addDh, Tensor addRows,
                                             Tensor dgAdd, Tensor duAdd, Tensor plainRows, Tensor keptDh, Tensor keptCols,
                                             Tensor dgKept, Tensor duKept) {
        if (!sparse.swigluBackwardJoin(dg, du, dh, g, u, addDh, addRows, dgAdd, duAdd, plainRows, keptDh, keptCols, dgKept, duKept))
            SparseOps.super.swigluBackwardJoin(dg, du, dh, g, u, addDh, addRows, dgAdd, duAdd, plainRows, keptDh, keptCols, dgKept,
                                             duKept);
    }

    @Override public void columnNorms(Tensor out, Tensor x) { sparse.columnNorms(out, x); }
    @Override public void sequenceMean(Tensor out, Tensor x, Tensor keyStart, int batch, int seqLen) { sparse.sequenceMean(out, x, keyStart, batch, seqLen); }
    @Override public void maskPaddingRows(Tensor x, Tensor keyStart, int batch, int seqLen) { sparse.maskPaddingRows(x, keyStart, batch, seqLen); }

    // ================================================================== SparseLoRA: the predictor

    @Override public void topK(Tensor idx, Tensor scores, int k) { predictor.topK(idx, scores, k); }
    @Override public void topKRows(Tensor idx, Tensor scores, int k) { predictor.topKRows(idx, scores, k); }
    @Override public void lowRankColumnNorms(Tensor[] outs, Tensor[] ts, Tensor[] qs) {
        if (!predictor.lowRankColumnNorms(outs, ts, qs)) SparseOps.super.lowRankColumnNorms(outs, ts, qs);
    }

    @Override public void lowRankSwigluColumnNorms(Tensor out, Tensor tg, Tensor qg, Tensor tu, Tensor qu) {
        if (!predictor.lowRankSwigluColumnNorms(out, tg, qg, tu, qu)) SparseOps.super.lowRankSwigluColumnNorms(out, tg, qg, tu, qu);
    }

    @Override public void kvChannelScores(Tensor scores, Tensor qNorms, Tensor kNorms, int kvHeads, int groupSize, int headDim) {
        predictor.kvChannelScores(scores, qNorms, kNorms, kvHeads, groupSize, headDim);
    }

    @Override public void expandGroupChannels(Tensor out, Tensor kvIdx, int groupSize, int headDim) {
        predictor.expandGroupChannels(out, kvIdx, groupSize, headDim);
    }

    @Override public void expandGroupChannelsRows(Tensor out, Tensor kvIdx, int groupSize, int headDim) {
        predictor.expandGroupChannelsRows(out, kvIdx, groupSize, headDim);
    }

    /**
     * Starts recording every op queued from now on into a graph instead of running it (relaxed
     * capture mode). Ops that wait for the device or upload from the host throw while capturing;
     * tensors may be made and closed: blocks acquired or released during the capture stay the
     * graph's until it is closed ({@link DevicePool}).
     */

    // ================================================================== graphs, timing

    /** A captured and instantiated CUDA graph; {@link #replay()} launches it on the backend's stream. */
    public final class Graph implements GraphCapture.Captured {
        private final CUgraph graph;
        private final CUgraphExec exec;
        private final DevicePool.Capture<DevPtr> blocks;  // tensor blocks its replays write (scratch and outputs)
        private boolean closed;

        Graph(CUgraph graph, CUgraphExec exec, DevicePool.Capture<DevPtr> blocks) {
            this.graph = graph;
            this.exec = exec;
            this.blocks = blocks;
        }

        /** Queues one replay (asynchronous, like every other op). */
        @Override
        public void replay() {
            dev.bind();
            if (closed) throw new IllegalStateException("graph closed");
            if (dev.capturing) throw new IllegalStateException("a graph cannot be replayed while another is being captured");
            cuGraphLaunch(exec, dev.stream);
        }

        @Override
        public void close() {
            if (closed || dev.closed) return;
            closed = true;
            dev.bind();
            // a replay may still be running: its blocks go back to the pool only after it is done
            // (the pool's reuse is stream-ordered, so later work queued on this stream is safe anyway)
            cuGraphExecDestroy(exec);
            cuGraphDestroy(graph);
            memory.pool.returnGraphBlocks(blocks);
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
    public void beginCapture() { graphs.beginCapture(); }

    /** Ends the capture and returns the instantiated graph. */
    @Override
    public Graph endCapture() { return graphs.endCapture(); }

    @Override
    public void abortCapture() { graphs.abortCapture(); }

    /** Runs {@code work} (which queues ops) and returns the device time it took in milliseconds, from CUDA events. */
    public float timeMs(Runnable work) { return graphs.timeMs(work); }

    @Override
    public void close() {
        if (dev.closed) return;
        dev.bind();
        dev.drain();
        blas.close();
        memory.close();
        dev.close();
    }
}
