package org.sparselora.cuda;

import static jcuda.driver.JCudaDriver.cuMemcpyDtoHAsync;
import static jcuda.driver.JCudaDriver.cuStreamSynchronize;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.List;
import jcuda.Pointer;
import org.sparselora.engine.backend.AdamwGroup;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/** A {@link GpuBackend}'s optimizer: the one-tensor AdamW and the fused multi-tensor group. */
final class GpuOptimizer extends GpuOps {
    GpuOptimizer(GpuBackend owner, GpuDevice dev) { super(owner, dev); }

    void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2,
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
    static final int MT_TILE = Kernels.constant("sparse", "multi_tile"), MT_THREADS = Kernels.constant("sparse", "multi_threads");

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
     * and zeroes the gradients it read, and may be captured in a CUDA graph. A slot's flags word
     * carries its float4 path (bit 0) and, after {@link #setDecayMask}, no decay (bit 1). The slots'
     * tensors must stay open while the group is used (their addresses are in the table).
     */
    private final class AdamwMulti implements AdamwGroup {
        private final int size, live;
        private final long tiles;
        private final Tensor table;    // MultiSlot[live]
        private final Tensor scratch;  // double partial[tiles], double out, uint counter (+pad)
        private final long[] words;    // the table as written: 8 words per live slot
        private final int[] liveOf;    // slot -> its row in the table, -1 for a slot without elements

        AdamwMulti(List<Tensor[]> slotsIn) {
            List<Tensor[]> slots = AdamwGroup.checkSlots(owner, slotsIn);
            size = slots.size();
            words = new long[slots.size() * 8];
            liveOf = new int[slots.size()];
            int k = 0, i = 0;
            long t0 = 0;
            for (Tensor[] s : slots) {
                GpuTensor P = own(s[0]), G = own(s[1]), M = own(s[2]), V = own(s[3]);
                GpuTensor C = s.length == 5 && s[4] != s[0] ? own(s[4]) : null;
                long n = P.numel();
                liveOf[i++] = n == 0 ? -1 : k;
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
            table = owner.empty(DType.I32, Math.max(2, live * 16));
            scratch = owner.empty(DType.I32, (int) (2 * tiles + 4));
            upload();
            owner.fill(scratch, 0f);  // the counter starts at 0; the last block of each launch resets it
        }

        /** Writes {@link #words} into the device table (little-endian halves of each 8-byte word). */
        private void upload() {
            int[] ints = new int[Math.max(2, live * 16)];
            for (int i = 0; i < live * 8; i++) {
                ints[2 * i] = (int) words[i];
                ints[2 * i + 1] = (int) (words[i] >>> 32);
            }
            owner.copyFromHost(table, ints);
        }

        /**
         * Bit 1 of a slot's flags (bit 33 of its 8th word) turns its weight decay off in the kernel
         * ({@code adamw_multi}, {@code adamw_multi_dev}); the table is written again, outside any
         * capture (a recorded update reads the table at replay, so it sees the new mask).
         */
        @Override
        public void setDecayMask(boolean[] decays) {
            if (decays == null || decays.length != size)
                throw new IllegalArgumentException("adamw group: decay mask needs " + size + " entries, got " + (decays == null ? "null" : decays.length));
            bind();
            noCapture("adamw group setDecayMask");
            for (int i = 0; i < size; i++) {
                int k = liveOf[i];
                if (k < 0) continue;
                if (decays[i]) words[k * 8 + 7] &= ~(1L << 33);
                else words[k * 8 + 7] |= 1L << 33;
            }
            upload();
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
    AdamwGroup adamwGroup(List<Tensor[]> slots) {
        bind();
        noCapture("adamwGroup");
        return new AdamwMulti(slots);
    }
}
