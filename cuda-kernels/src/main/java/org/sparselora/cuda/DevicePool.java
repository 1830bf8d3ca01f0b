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
 * <p>Blocks released while a graph is being captured are handed to that graph instead of the free
 * list: the graph's replays keep using them as scratch, so no other tensor may get them until the
 * graph is closed. Driver memory is given back only by {@link #trim()} (tried before failing an
 * allocation) and {@link #close()}.
 *
 * @param <P> the driver's handle of one allocation
 */
final class DevicePool<P> implements AutoCloseable {

    /** The two driver calls the pool needs; {@code alloc} throws when the device is out of memory. */
    interface Driver<P> {
        P alloc(long bytes);

        void free(P block);
    }

    /** One pooled allocation: the driver handle and its rounded size. */
    record Block<P>(P handle, long bytes) {}

    private final Driver<P> driver;
    private final Map<Long, ArrayDeque<Block<P>>> free = new HashMap<>();
    private List<Block<P>> capturing;  // non-null while a graph capture runs
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
        ArrayDeque<Block<P>> q = free.get(size);
        Block<P> b = q == null ? null : q.poll();
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
        return b;
    }

    void release(Block<P> b) {
        inUse -= b.bytes();
        if (capturing != null) capturing.add(b);
        else free.computeIfAbsent(b.bytes(), k -> new ArrayDeque<>()).add(b);
    }

    /** From now until {@link #endCapture()}, released blocks belong to the graph being captured. */
    void beginCapture() {
        if (capturing != null) throw new IllegalStateException("capture already running");
        capturing = new ArrayList<>();
    }

    /** The blocks the captured graph owns; give them back with {@link #returnGraphBlocks} when it is closed. */
    List<Block<P>> endCapture() {
        List<Block<P>> owned = capturing == null ? List.of() : capturing;
        capturing = null;
        return owned;
    }

    void returnGraphBlocks(List<Block<P>> owned) {
        for (Block<P> b : owned) free.computeIfAbsent(b.bytes(), k -> new ArrayDeque<>()).add(b);
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
