package org.sparselora.engine.backend.cpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.ref.ReferenceBackend;

/**
 * CpuBackend's batched cached attention against the reference's plain loops on fresh random inputs:
 * GQA, left padding of different lengths (one sequence without, one whose padding covers the first
 * new slots), a prefill of several tokens and single-token steps after it, with and without a
 * sliding window; and a sequence without padding gets exactly the single-sequence op's bits.
 */
class CachedBatchAttentionTest {
    static final CpuBackend be = new CpuBackend(3);
    static final ReferenceBackend ref = new ReferenceBackend();
    static final int B = 3, H = 6, HKV = 2, D = 8, MAXT = 14;
    static final float SCALE = (float) (1 / Math.sqrt(D));
    static final int[] KEY_START = {0, 5, 2};

    @AfterAll
    static void close() { be.close(); }

    static float[] rand(Random r, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) r.nextGaussian();
        return x;
    }

    /** CPU vs reference for n new tokens per sequence at slots [pos0, pos0+n) of random caches. */
    static float[] check(Random r, int pos0, int n, int window) {
        float[] q = rand(r, n * B * H * D), k = rand(r, MAXT * B * HKV * D), v = rand(r, MAXT * B * HKV * D);
        Tensor o = be.empty(DType.F32, n * B, H * D), ro = ref.empty(DType.F32, n * B, H * D);
        be.fill(o, Float.NaN); // poisoned: the op must write every element
        be.attentionCachedBatch(o, be.fromFloats(q, DType.F32, n * B, H * D), be.fromFloats(k, DType.F32, MAXT * B, HKV * D),
                be.fromFloats(v, DType.F32, MAXT * B, HKV * D), be.fromInts(KEY_START, B), B, pos0, H, HKV, D, SCALE, window);
        ref.attentionCachedBatch(ro, ref.fromFloats(q, DType.F32, n * B, H * D), ref.fromFloats(k, DType.F32, MAXT * B, HKV * D),
                ref.fromFloats(v, DType.F32, MAXT * B, HKV * D), ref.fromInts(KEY_START, B), B, pos0, H, HKV, D, SCALE, window);
        float[] got = be.toFloats(o), want = ref.toFloats(ro);
        String what = "pos0 " + pos0 + " n " + n + " window " + window;
        for (int i = 0; i < want.length; i++) assertEquals(want[i], got[i], 1e-5 * (1 + Math.abs(want[i])), what + " at " + i);
        // slots before a sequence's keyStart see no key: exactly zero
        for (int t = 0; t < n; t++)
            for (int b = 0; b < B; b++)
                if (pos0 + t < KEY_START[b])
                    for (int i = 0; i < H * D; i++) assertEquals(0f, got[(t * B + b) * H * D + i], what + " padding slot " + (pos0 + t) + " of " + b);
        return got;
    }

    @Test
    void matchesTheReferenceForPrefillAndSteps() {
        Random r = new Random(21);
        for (int window : new int[] {0, 3}) {
            check(r, 0, 7, window);   // prefill: sequence 1's first five slots are padding
            check(r, 7, 1, window);   // one token per sequence
            check(r, 12, 2, window);  // several tokens after a prefix, up to the cache's end
        }
    }

    @Test
    void aWindowThatCoversTheSequenceIsThePlainOp() {
        Random r = new Random(22);
        float[] q = rand(r, B * H * D), k = rand(r, MAXT * B * HKV * D), v = rand(r, MAXT * B * HKV * D);
        float[][] outs = new float[2][];
        for (int w = 0; w < 2; w++) {
            Tensor o = be.empty(DType.F32, B, H * D);
            be.attentionCachedBatch(o, be.fromFloats(q, DType.F32, B, H * D), be.fromFloats(k, DType.F32, MAXT * B, HKV * D),
                    be.fromFloats(v, DType.F32, MAXT * B, HKV * D), be.fromInts(KEY_START, B), B, 9, H, HKV, D, SCALE, w == 0 ? 0 : 10);
            outs[w] = be.toFloats(o);
        }
        assertArrayEquals(outs[0], outs[1]);
    }

    @Test
    void aSequenceWithoutPaddingGetsTheSingleSequenceBits() {
        // column b of the time-major cache as its own (maxT, Hkv·D) cache, against attentionCached
        Random r = new Random(23);
        int pos0 = 6, n = 3, b = 0;
        float[] q = rand(r, n * B * H * D), k = rand(r, MAXT * B * HKV * D), v = rand(r, MAXT * B * HKV * D);
        Tensor o = be.empty(DType.F32, n * B, H * D);
        be.attentionCachedBatch(o, be.fromFloats(q, DType.F32, n * B, H * D), be.fromFloats(k, DType.F32, MAXT * B, HKV * D),
                be.fromFloats(v, DType.F32, MAXT * B, HKV * D), be.fromInts(KEY_START, B), B, pos0, H, HKV, D, SCALE);
        float[] qb = new float[n * H * D], kb = new float[MAXT * HKV * D], vb = new float[MAXT * HKV * D];
        for (int t = 0; t < n; t++) System.arraycopy(q, (t * B + b) * H * D, qb, t * H * D, H * D);
        for (int j = 0; j < MAXT; j++) {
            System.arraycopy(k, (j * B + b) * HKV * D, kb, j * HKV * D, HKV * D);
            System.arraycopy(v, (j * B + b) * HKV * D, vb, j * HKV * D, HKV * D);
        }
        Tensor ob = be.empty(DType.F32, n, H * D);
        be.attentionCached(ob, be.fromFloats(qb, DType.F32, n, H * D), be.fromFloats(kb, DType.F32, MAXT, HKV * D),
                be.fromFloats(vb, DType.F32, MAXT, HKV * D), pos0, H, HKV, D, SCALE);
        float[] got = be.toFloats(o), want = be.toFloats(ob);
        for (int t = 0; t < n; t++)
            assertArrayEquals(Arrays.copyOfRange(want, t * H * D, (t + 1) * H * D),
                    Arrays.copyOfRange(got, (t * B + b) * H * D, (t * B + b + 1) * H * D), "token " + t);
    }

    @Test
    void badShapesAreOneClearError() {
        Tensor q = be.empty(DType.F32, B, H * D), kc = be.empty(DType.F32, MAXT * B, HKV * D), ks = be.fromInts(KEY_START, B);
        var e = assertThrows(IllegalArgumentException.class,
                () -> be.attentionCachedBatch(q, q, kc, kc, ks, B, MAXT, H, HKV, D, SCALE)); // slot MAXT is past the cache
        assertTrue(e.getMessage().contains("attentionCachedBatch"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> be.attentionCachedBatch(q, q, kc, kc, be.fromInts(new int[] {0, 0}, 2), B, 0, H, HKV, D, SCALE));
        for (Backend x : new Backend[] {be, ref}) {
            Tensor xq = x.empty(DType.F32, B, H * D), xk = x.empty(DType.F32, MAXT * B, HKV * D);
            assertThrows(IllegalArgumentException.class, () -> x.attentionCachedBatch(xq, xq, xk, xk, x.fromInts(KEY_START, B), B, 0, H, 4, D, SCALE),
                    x.name() + ": 6 heads over 4 kv heads");
        }
    }
}
