package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The caching allocator's bookkeeping, against a fake driver (runs without a GPU). */
class DevicePoolTest {

    /** Hands out fresh handles, remembers frees, and can be told how much "device memory" exists. */
    static final class FakeDriver implements DevicePool.Driver<long[]> {
        long capacity = Long.MAX_VALUE, live;
        final List<long[]> freed = new ArrayList<>();
        int allocs;

        @Override public long[] alloc(long bytes) {
            if (live + bytes > capacity) throw new IllegalStateException("out of memory");
            live += bytes;
            allocs++;
            return new long[] {bytes};
        }

        @Override public void free(long[] block) {
            live -= block[0];
            freed.add(block);
        }
    }

    @Test
    void bucketsRoundUp() {
        assertEquals(512, DevicePool.bucket(1));
        assertEquals(512, DevicePool.bucket(512));
        assertEquals(1024, DevicePool.bucket(513));
        assertEquals(1L << 20, DevicePool.bucket((1L << 20) - 5));
        assertEquals(2L << 20, DevicePool.bucket((1L << 20) + 1));
        assertEquals(4L << 20, DevicePool.bucket((2L << 20) + 1));
        for (long n : new long[] {1, 700, 4097, 3_000_000, 123_456_789}) assertTrue(DevicePool.bucket(n) >= n);
    }

    @Test
    void releasedBlocksAreReusedWithoutDriverCalls() {
        FakeDriver d = new FakeDriver();
        DevicePool<long[]> pool = new DevicePool<>(d);
        DevicePool.Block<long[]> a = pool.acquire(1000);
        pool.release(a);
        DevicePool.Block<long[]> b = pool.acquire(900);  // same 1024-byte bucket
        assertSame(a.handle(), b.handle());
        assertEquals(1, d.allocs);
        DevicePool.Block<long[]> c = pool.acquire(900);  // the bucket is empty again: a new block
        assertNotSame(b.handle(), c.handle());
        assertEquals(2048, pool.inUseBytes());
        assertEquals(2048, pool.peakHeldBytes());
        pool.release(b);
        pool.release(c);
        assertEquals(0, pool.inUseBytes());
        assertEquals(2048, pool.peakInUseBytes());
        pool.resetPeaks();
        assertEquals(0, pool.peakInUseBytes());
        assertEquals(2048, pool.peakHeldBytes());  // the cached blocks are still held
        assertEquals(2048, pool.trim());
        assertEquals(0, d.live);
    }

    @Test
    void blocksReleasedDuringCaptureStayWithTheGraph() {
        FakeDriver d = new FakeDriver();
        DevicePool<long[]> pool = new DevicePool<>(d);
        DevicePool.Block<long[]> before = pool.acquire(4096);
        pool.beginCapture();
        DevicePool.Block<long[]> tmp = pool.acquire(4096);
        pool.release(tmp);
        pool.release(before);
        DevicePool.Capture<long[]> graph = pool.endCapture();
        assertEquals(2, graph.owned().size());
        // neither may be handed out while the graph lives
        DevicePool.Block<long[]> after = pool.acquire(4096);
        assertNotSame(tmp.handle(), after.handle());
        assertNotSame(before.handle(), after.handle());
        pool.returnGraphBlocks(graph);
        assertTrue(List.of(tmp.handle(), before.handle()).contains(pool.acquire(4096).handle()));
        assertThrows(IllegalStateException.class, () -> { pool.beginCapture(); pool.beginCapture(); });
    }

    @Test
    void aCaptureReusesItsOwnReleasedBlocksLikeAnEagerRun() {
        FakeDriver d = new FakeDriver();
        DevicePool<long[]> pool = new DevicePool<>(d);
        pool.beginCapture();
        for (int layer = 0; layer < 10; layer++) pool.release(pool.acquire(1 << 20));   // a per-layer temporary
        DevicePool.Capture<long[]> graph = pool.endCapture();
        assertEquals(1 << 20, d.live, "one block serves every layer inside the capture");
        assertEquals(1, graph.owned().size());
        pool.returnGraphBlocks(graph);
        pool.acquire(1 << 20);
        assertEquals(1 << 20, d.live, "given back to the pool with the graph");
    }

    @Test
    void aBlockMadeDuringCaptureAndReleasedAfterItStaysWithTheGraph() {
        FakeDriver d = new FakeDriver();
        DevicePool<long[]> pool = new DevicePool<>(d);
        pool.beginCapture();
        DevicePool.Block<long[]> out = pool.acquire(4096);   // e.g. a step's index tensor, closed after the step
        DevicePool.Capture<long[]> graph = pool.endCapture();
        pool.release(out);                                    // the graph's replays still write it
        assertEquals(1, graph.owned().size());
        assertNotSame(out.handle(), pool.acquire(4096).handle());
        pool.returnGraphBlocks(graph);
        assertSame(out.handle(), pool.acquire(4096).handle());

        // held past the graph's end: released afterwards it is an ordinary block again
        pool.beginCapture();
        DevicePool.Block<long[]> kept = pool.acquire(8192);
        DevicePool.Capture<long[]> g2 = pool.endCapture();
        pool.returnGraphBlocks(g2);
        pool.release(kept);
        assertSame(kept.handle(), pool.acquire(8192).handle());
    }

    @Test
    void outOfMemoryTrimsTheCacheThenRetries() {
        FakeDriver d = new FakeDriver();
        d.capacity = 8 << 20;
        DevicePool<long[]> pool = new DevicePool<>(d);
        DevicePool.Block<long[]> a = pool.acquire(6 << 20);
        pool.release(a);                       // cached, still held from the driver
        DevicePool.Block<long[]> b = pool.acquire(4 << 20);  // needs the cached 6 MiB given back first
        assertEquals(4L << 20, b.bytes());
        assertEquals(4L << 20, pool.heldBytes());
        assertThrows(IllegalStateException.class, () -> pool.acquire(6 << 20));  // nothing left to trim
    }
}
