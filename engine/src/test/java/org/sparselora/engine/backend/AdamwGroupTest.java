package org.sparselora.engine.backend;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.io.Dtypes;

/**
 * {@link Backend#adamwGroup}'s default (what CpuBackend uses) against the per-tensor ops it stands
 * for: bit-for-bit equal parameters, moments, compute copies and zeroed gradients over several
 * steps; the empty group; and the slot checks, whose errors must name the slot and the tensor.
 */
class AdamwGroupTest {
    static final CpuBackend be = new CpuBackend(2);
    static final SplittableRandom RNG = new SplittableRandom(20261129);

    @AfterAll
    static void close() { be.close(); }

    static float[] rand(int n, double scale) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) (RNG.nextDouble(-1, 1) * scale);
        return a;
    }

    static Tensor f32(float[] v, int... shape) { return be.fromFloats(v, DType.F32, shape); }

    /** Two identical sets of slots (group side and loop side) over tensors of mixed sizes. */
    @Test
    void groupStepEqualsThePerTensorLoopBitForBit() {
        int[][] shapes = {{4, 16}, {16, 4}, {1, 1}, {3, 70_001}, {7}, {0, 5}, {32, 33}};
        List<Tensor[]> gs = new ArrayList<>(), ls = new ArrayList<>();
        for (int i = 0; i < shapes.length; i++) {
            int[] sh = shapes[i];
            int n = 1;
            for (int d : sh) n *= d;
            float[] p = rand(n, 1), g = rand(n, 3), m = rand(n, 0.1), v = rand(n, 0.01);
            for (int j = 0; j < n; j++) v[j] = Math.abs(v[j]);
            Tensor[] a = {f32(p, sh), f32(g, sh), f32(m, sh), f32(v, sh)};
            Tensor[] b = {f32(p, sh), f32(g, sh), f32(m, sh), f32(v, sh)};
            if (i % 3 == 1) { // a bf16 compute copy, refreshed after each step
                a = new Tensor[] {a[0], a[1], a[2], a[3], be.zeros(DType.BF16, sh)};
                b = new Tensor[] {b[0], b[1], b[2], b[3], be.zeros(DType.BF16, sh)};
            } else if (i % 3 == 2) { // the compute copy is the parameter itself: nothing to copy
                a = new Tensor[] {a[0], a[1], a[2], a[3], a[0]};
                b = new Tensor[] {b[0], b[1], b[2], b[3], b[0]};
            }
            gs.add(a);
            ls.add(b);
        }
        try (AdamwGroup group = be.adamwGroup(gs)) {
            assertEquals(shapes.length, group.size());
            for (int step = 1; step <= 3; step++) {
                List<Tensor> lg = new ArrayList<>();
                for (Tensor[] s : ls) lg.add(s[1]);
                double want = be.sumOfSquares(lg);
                assertEquals(want, group.gradSumOfSquares(), "sum of squares, step " + step);
                assertTrue(want > 0);
                float lr = 1e-2f * step, scale = 0.37f / step;
                group.step(lr, 0.9f, 0.95f, 1e-6f, 0.05f, step, scale, step < 3);
                for (Tensor[] s : ls) {
                    be.adamw(s[0], s[1], s[2], s[3], lr, 0.9f, 0.95f, 1e-6f, 0.05f, step, scale);
                    if (s.length == 5 && s[4] != s[0]) be.copy(s[4], s[0]);
                    if (step < 3) be.fill(s[1], 0f);
                }
                String[] role = {"param", "grad", "m", "v", "copy"};
                for (int i = 0; i < gs.size(); i++)
                    for (int j = 0; j < gs.get(i).length; j++)
                        assertArrayEquals(be.toFloats(ls.get(i)[j]), be.toFloats(gs.get(i)[j]), "slot " + i + " " + role[j] + " after step " + step);
                for (Tensor[] s : gs) {
                    float[] g = be.toFloats(s[1]);
                    if (step < 3) for (float x : g) assertEquals(0f, x, "gradients zeroed when asked");
                    // the next step needs gradients again: fresh values on both sides
                    if (step < 3) {
                        float[] ng = rand(g.length, 2);
                        be.copyFromHost(s[1], ng);
                        be.copyFromHost(ls.get(gs.indexOf(s))[1], ng);
                    }
                }
            }
            // step 3 kept its gradients (zeroGrads = false): non-zero still
            assertTrue(group.gradSumOfSquares() > 0);
            // the copy is the bf16 rounding of the updated parameter
            float[] p = be.toFloats(gs.get(1)[0]), c = be.toFloats(gs.get(1)[4]);
            for (int j = 0; j < p.length; j++) assertEquals(Dtypes.bf16ToFloat(Dtypes.floatToBf16(p[j])), c[j]);
        }
    }

    @Test
    void emptyGroupDoesNothing() {
        try (AdamwGroup group = be.adamwGroup(List.of())) {
            assertEquals(0, group.size());
            assertEquals(0.0, group.gradSumOfSquares());
            group.step(1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1, 1f, true);
        }
    }

    @Test
    void badSlotsAreRejectedNamingTheSlot() {
        Tensor p = be.zeros(DType.F32, 4, 8), g = be.zeros(DType.F32, 4, 8), m = be.zeros(DType.F32, 4, 8), v = be.zeros(DType.F32, 4, 8);
        Tensor[] good = {p, g, m, v};
        assertMessage(() -> be.adamwGroup(slots(good, new Tensor[] {p, g, m})), "slot 1", "3 tensors");
        assertMessage(() -> be.adamwGroup(slots(good, good, new Tensor[] {p, g, be.zeros(DType.BF16, 4, 8), v})), "slot 2", "m must be F32");
        assertMessage(() -> be.adamwGroup(slots(new Tensor[] {p, g, m, be.zeros(DType.F32, 8, 4)})), "slot 0", "v F32[8, 4]", "param F32[4, 8]");
        assertMessage(() -> be.adamwGroup(slots(good, new Tensor[] {p, be.zeros(DType.F32, 32), m, v})), "slot 1", "grad");
        assertMessage(() -> be.adamwGroup(slots(new Tensor[] {p, g, m, v, be.zeros(DType.BF16, 4, 9)})), "slot 0", "compute copy");
        assertMessage(() -> be.adamwGroup(slots(new Tensor[] {p, g, m, v, be.zeros(DType.I32, 4, 8)})), "slot 0", "compute copy must be a floating tensor");
        assertMessage(() -> be.adamwGroup(slots(new Tensor[] {p, null, m, v})), "slot 0", "grad is null");
        try (CpuBackend other = new CpuBackend(1)) {
            assertMessage(() -> be.adamwGroup(slots(new Tensor[] {p, g, other.zeros(DType.F32, 4, 8), v})), "slot 0", "m", "belongs to backend");
        }
        try (AdamwGroup group = be.adamwGroup(slots(good))) {
            assertMessage(() -> group.step(1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 0, 1f, true), "step is 1-based");
        }
    }

    static List<Tensor[]> slots(Tensor[]... s) {
        List<Tensor[]> l = new ArrayList<>();
        for (Tensor[] x : s) l.add(x);
        return l;
    }

    static void assertMessage(org.junit.jupiter.api.function.Executable ex, String... parts) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, ex);
        for (String s : parts) assertTrue(e.getMessage().contains(s), "message '" + e.getMessage() + "' should contain '" + s + "'");
    }

    /** A decay mask: masked-off slots step as with weight decay 0, the others with it; a group without mask support refuses a mixed mask. */
    @Test
    void decayMaskChoosesWeightDecayPerSlot() {
        float[] p = rand(64, 1), g = rand(64, 1);
        Tensor[] a = {f32(p, 64), f32(g, 64), be.zeros(DType.F32, 64), be.zeros(DType.F32, 64)};
        Tensor[] b = {f32(p, 64), f32(g, 64), be.zeros(DType.F32, 64), be.zeros(DType.F32, 64)};
        Tensor[] ra = {f32(p, 64), f32(g, 64), be.zeros(DType.F32, 64), be.zeros(DType.F32, 64)};
        Tensor[] rb = {f32(p, 64), f32(g, 64), be.zeros(DType.F32, 64), be.zeros(DType.F32, 64)};
        AdamwGroup grp = new AdamwGroup.PerTensor(be, List.of(a, b));
        grp.setDecayMask(new boolean[] {true, false});
        grp.step(0.1f, 0.9f, 0.999f, 1e-8f, 0.3f, 1, 0.5f, false);
        be.adamw(ra[0], ra[1], ra[2], ra[3], 0.1f, 0.9f, 0.999f, 1e-8f, 0.3f, 1, 0.5f);
        be.adamw(rb[0], rb[1], rb[2], rb[3], 0.1f, 0.9f, 0.999f, 1e-8f, 0f, 1, 0.5f);
        assertArrayEquals(be.toFloats(ra[0]), be.toFloats(a[0]));
        assertArrayEquals(be.toFloats(rb[0]), be.toFloats(b[0]));
        assertThrows(IllegalArgumentException.class, () -> grp.setDecayMask(new boolean[] {true}));
        AdamwGroup noMask = new AdamwGroup() {
            @Override public int size() { return 2; }
            @Override public double gradSumOfSquares() { return 0; }
            @Override public void step(float lr, float b1, float b2, float eps, float wd, int step, float gs, boolean z) {}
            @Override public void close() {}
        };
        noMask.setDecayMask(new boolean[] {true, true});
        assertThrows(UnsupportedOperationException.class, () -> noMask.setDecayMask(new boolean[] {true, false}));
    }
}
