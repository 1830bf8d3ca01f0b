package org.sparselora.cuda;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A caching allocator for device memory, so tensors made and closed every step cost no driver
 * call: {@code cuMemFree} synchronises the whole device (a hidden sync in the middle of a step) and
 * neither it nor a fresh {@code cuMemAlloc} belongs inside a captured CUDA graph. Sizes are rounded
 * to buckets (powers of two below 1 MiB, 2 MiB multiples above) and a released block waits in its
 * bucket's free list for the next request of that size. Reuse is safe because the backend runs all
 * work on one stream: whatever the old owner queued completes before the new owner's work starts.
 *
 * <p>Graph capture ({@link #beginCapture()} … {@link #endCapture()}): a captured graph's replays write
 * the very blocks its captured ops wrote, so no tensor outside the graph may get them while it
 * lives. Blocks released during the capture go to a free list local to the capture (later requests
 * of the same capture reuse them, in stream order as in an eager run, so a captured step needs no
 * more memory than an eager one) and belong to the graph when the capture ends. Blocks acquired
 * during the capture and still held when it ends (e.g. a step's index tensors closed after the
 * step) are tagged with it: when their holder releases them they too go to the graph, not to the
 * free list. {@link #returnGraphBlocks} (the graph closed) gives them all back. Driver memory is
 * given back only by {@link #trim()} (tried before failing an allocation) and {@link #close()}.
 *
 * @param <P> the driver's handle of one allocation
 */
final class DevicePool<P> implements AutoCloseable {

    /** The two driver calls the pool needs; {@code alloc} throws when the device is out of memory. */
    interface Driver<P> {
        P alloc(long bytes);

        void free(P block);
    }

    /** One pooled allocation: the driver handle and its rounded size (identity matters: a block is one allocation). */
    static final class Block<P> {
        private final P handle;
        private final long bytes;
        private Capture<P> graph;   // the (live) graph whose capture acquired this block, if any

        Block(P handle, long bytes) {
            this.handle = handle;
            this.bytes = bytes;
        }

        P handle() { return handle; }

        long bytes() { return bytes; }
    }

    /** The blocks of one graph capture: {@link #endCapture()} returns it; pass it to {@link #returnGraphBlocks} when the graph is closed. */
    static final class Capture<P> {
        private final List<Block<P>> owned = new ArrayList<>();                 // the graph's blocks (released by their holders)
        private final Map<Long, ArrayDeque<Block<P>>> local = new HashMap<>();  // released during the capture, reusable by it
        private final java.util.Set<Block<P>> held = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
        private boolean capturing = true, closed;

        /** Blocks the graph owns now (released ones); more join as holders release blocks acquired during the capture. */
        List<Block<P>> owned() {
            List<Block<P>> all = new ArrayList<>(owned);
            for (ArrayDeque<Block<P>> q : local.values()) all.addAll(q);
            return all;
        }
    }

    private final Driver<P> driver;
    private final Map<Long, ArrayDeque<Block<P>>> free = new HashMap<>();
    private Capture<P> capturing;  // non-null while a graph capture runs
    private long held, inUse, peakHeld, peakInUse;

    DevicePool(Driver<P> driver) { this.driver = driver; }

    /** The bucket size a request of {@code bytes} is served from. */
    static long bucket(long bytes) {
        long b = Math.max(bytes, 512);
        if (b <= (1L << 20)) {
            long p = Long.highestOneBit(b);
            return p == b ? b : p << 1;
        }
        long m = 2L << 20;
        return (b + m - 1) / m * m;
    }

    Block<P> acquire(long bytes) {
        long size = bucket(bytes);
        Block<P> b = null;
        if (capturing != null) {
            ArrayDeque<Block<P>> lq = capturing.local.get(size);
            b = lq == null ? null : lq.poll();
        }
        ArrayDeque<Block<P>> q = free.get(size);
        if (b == null) b = q == null ? null : q.poll();
        if (b == null) {
            P h;
            try {
                h = driver.alloc(size);
            } catch (RuntimeException outOfMemory) {
                if (trim() == 0) throw outOfMemory;
                h = driver.alloc(size);  // after giving cached blocks back
            }
            b = new Block<>(h, size);
            held += size;
            peakHeld = Math.max(peakHeld, held);
        }
        inUse += size;
        peakInUse = Math.max(peakInUse, inUse);
        if (capturing != null) {
            b.graph = capturing;
            capturing.held.add(b);
        }
        return b;
    }

    void release(Block<P> b) {
        inUse -= b.bytes();
        if (capturing != null) {
            // reusable by the rest of this capture, the graph's afterwards (a block of another live
            // graph stays that graph's too: both replay into it, one after the other on one stream)
            if (b.graph == capturing) capturing.held.remove(b);
            else if (b.graph != null) {
                b.graph.held.remove(b);
                b.graph.owned.add(b);
                return;
            }
            b.graph = capturing;
            capturing.local.computeIfAbsent(b.bytes(), k -> new ArrayDeque<>()).add(b);
        } else if (b.graph != null) {
            b.graph.held.remove(b);
            b.graph.owned.add(b);    // the graph's replays still write it
        } else {
            free.computeIfAbsent(b.bytes(), k -> new ArrayDeque<>()).add(b);
        }
    }

    /** From now until {@link #endCapture()}, blocks acquired or released belong to the graph being captured. */
    void beginCapture() {
        if (capturing != null) throw new IllegalStateException("capture already running");
        capturing = new Capture<>();
    }

    /** The captured graph's blocks; give them back with {@link #returnGraphBlocks} when it is closed. */
    Capture<P> endCapture() {
        if (capturing == null) throw new IllegalStateException("no capture running");
        Capture<P> c = capturing;
        capturing = null;
        c.capturing = false;
        for (ArrayDeque<Block<P>> q : c.local.values()) c.owned.addAll(q);
        c.local.clear();
        return c;
    }

    /** The graph is closed: its released blocks go back to the free list; blocks still held go there when released. */
    void returnGraphBlocks(Capture<P> c) {
        if (c.closed) return;
        if (c.capturing) throw new IllegalStateException("the capture is still running");
        c.closed = true;
        for (Block<P> b : c.owned) {
            b.graph = null;
            free.computeIfAbsent(b.bytes(), k -> new ArrayDeque<>()).add(b);
        }
        c.owned.clear();
        for (Block<P> b : c.held) b.graph = null;
        c.held.clear();
    }

    /** Frees every cached (unused) block; returns the bytes given back to the driver. */
    long trim() {
        long n = 0;
        for (ArrayDeque<Block<P>> q : free.values()) {
            for (Block<P> b : q) {
                driver.free(b.handle());
                n += b.bytes();
            }
            q.clear();
        }
        held -= n;
        return n;
    }

    /** Bytes obtained from the driver now (in use + cached). */
    long heldBytes() { return held; }

    long inUseBytes() { return inUse; }

    /** The most bytes held from the driver at once: the pool's device-memory footprint. */
    long peakHeldBytes() { return peakHeld; }

    long peakInUseBytes() { return peakInUse; }

    /** Starts a new peak window at the current levels. */
    void resetPeaks() {
        peakHeld = held;
        peakInUse = inUse;
    }

    /** Frees cached blocks; blocks still in use stay with their owners (freed with the context). */
    @Override
    public void close() { trim(); }
}
