package org.sparselora.engine.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.InvocationHandler;
import java.lang.reflect.Proxy;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.cpu.CpuBackend;

/**
 * The decision logic of {@link Backend}'s windowed-attention defaults, as a backend without a
 * windowed kernel (GpuBackend) gets it: a window that covers the sequence calls the plain op with
 * the same arguments, a shorter one is one error naming the window and the sequence length. The
 * backend here is a proxy whose only real behaviour is the interface's default methods; the plain
 * ops just record that they were called.
 */
class WindowedAttentionDefaultsTest {
    static final CpuBackend cpu = new CpuBackend(1);

    @AfterAll
    static void close() { cpu.close(); }

    final List<String> calls = new ArrayList<>();

    Backend recordingBackend() {
        InvocationHandler h = (proxy, m, args) -> {
            if (m.isDefault()) return InvocationHandler.invokeDefault(proxy, m, args);
            return switch (m.getName()) {
                case "attention", "attentionBackward", "attentionCached", "attentionCachedBatch" -> {
                    calls.add(m.getName() + "/" + args.length);
                    yield null;
                }
                case "toString" -> "RecordingBackend";
                case "hashCode" -> System.identityHashCode(proxy);
                case "equals" -> proxy == args[0];
                default -> throw new UnsupportedOperationException(m.getName());
            };
        };
        return (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[] {Backend.class}, h);
    }

    @Test
    void coversSequenceRule() {
        assertTrue(Backend.windowCoversSequence(0, 10));
        assertTrue(Backend.windowCoversSequence(-1, 10));
        assertTrue(Backend.windowCoversSequence(10, 10));
        assertTrue(Backend.windowCoversSequence(4096, 10));
        assertEquals(false, Backend.windowCoversSequence(9, 10));
        assertEquals(false, Backend.windowCoversSequence(1, 2));
    }

    @Test
    void aCoveringWindowDelegatesToThePlainOps() {
        Backend be = recordingBackend();
        int b = 1, t = 8, h = 2, hkv = 1, d = 2;
        Tensor q = cpu.empty(DType.F32, t, h * d), k = cpu.empty(DType.F32, t, hkv * d), ks = cpu.fromInts(new int[] {0}, 1);
        Tensor ks2 = cpu.fromInts(new int[] {0, 3}, 2);
        for (int w : new int[] {0, -1, 8, 9, 4096}) {
            be.attention(q, null, q, k, k, ks, b, t, h, hkv, d, 1f, w);
            be.attentionBackward(q, k, k, q, q, null, q, k, k, ks, b, t, h, hkv, d, 1f, w);
            // cached: 3 new tokens after 5 cached ones see at most 8 keys
            be.attentionCached(q.rows(0, 3), q.rows(0, 3), k, k, 5, h, hkv, d, 1f, w);
            // batched: 2 sequences, 2 new tokens each (4 rows) after 6 cached slots see at most 8 keys
            be.attentionCachedBatch(q.rows(0, 4), q.rows(0, 4), k, k, ks2, 2, 6, h, hkv, d, 1f, w);
        }
        assertEquals(20, calls.size());
        assertEquals(List.of("attention/12", "attentionBackward/16", "attentionCached/9", "attentionCachedBatch/11"), calls.subList(0, 4));
    }

    @Test
    void aShorterWindowIsOneClearError() {
        Backend be = recordingBackend();
        int b = 1, t = 8, h = 2, hkv = 1, d = 2;
        Tensor q = cpu.empty(DType.F32, t, h * d), k = cpu.empty(DType.F32, t, hkv * d), ks = cpu.fromInts(new int[] {0}, 1);
        var e = assertThrows(UnsupportedOperationException.class, () -> be.attention(q, null, q, k, k, ks, b, t, h, hkv, d, 1f, 7));
        assertTrue(e.getMessage().contains("sliding window 7") && e.getMessage().contains("sequence length 8"), e.getMessage());
        e = assertThrows(UnsupportedOperationException.class,
                () -> be.attentionBackward(q, k, k, q, q, null, q, k, k, ks, b, t, h, hkv, d, 1f, 3));
        assertTrue(e.getMessage().startsWith("attentionBackward: sliding window 3"), e.getMessage());
        e = assertThrows(UnsupportedOperationException.class, () -> be.attentionCached(q.rows(0, 3), q.rows(0, 3), k, k, 5, h, hkv, d, 1f, 7));
        assertTrue(e.getMessage().contains("sliding window 7") && e.getMessage().contains("sequence length 8"), e.getMessage());
        e = assertThrows(UnsupportedOperationException.class,
                () -> be.attentionCachedBatch(q.rows(0, 4), q.rows(0, 4), k, k, cpu.fromInts(new int[] {0, 3}, 2), 2, 6, h, hkv, d, 1f, 7));
        assertTrue(e.getMessage().startsWith("attentionCachedBatch: sliding window 7") && e.getMessage().contains("sequence length 8"), e.getMessage());
        assertEquals(List.of(), calls, "nothing ran");
    }
}
