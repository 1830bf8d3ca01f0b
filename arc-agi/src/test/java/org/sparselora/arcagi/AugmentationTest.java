package org.sparselora.arcagi;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Symmetries, colour permutations and demonstration orders: all invertible, all distinct. */
class AugmentationTest {

    @Test
    void everyAugmentationIsInvertedExactlyOnRandomGrids() {
        SplittableRandom r = new SplittableRandom(3);
        for (int trial = 0; trial < 200; trial++) {
            int[][] g = ArcTokenizerTest.randomGrid(r, 30);
            for (int d = 0; d < Augmentation.DIHEDRAL; d++) {
                Augmentation a = new Augmentation(d, Augmentation.randomColors(r, trial % 2 == 0), new int[0]);
                int[][] x = a.apply(g);
                assertArrayEquals(g, a.invert(x), a.toString());
                boolean swapsSides = d % 2 == 1 ^ d >= 4;
                assertEquals(swapsSides ? g[0].length : g.length, x.length, a + ": height");
            }
        }
    }

    @Test
    void theEightSymmetriesAreTheDihedralGroup() {
        int[][] g = {{1, 2, 3}, {4, 5, 6}};   // no symmetry of its own: all 8 images differ
        Set<String> images = new HashSet<>();
        for (int d = 0; d < 8; d++) images.add(java.util.Arrays.deepToString(Augmentation.dihedral(d).apply(g)));
        assertEquals(8, images.size());
        assertArrayEquals(new int[][] {{4, 1}, {5, 2}, {6, 3}}, Augmentation.dihedral(1).apply(g), "90° clockwise");
        assertArrayEquals(new int[][] {{1, 4}, {2, 5}, {3, 6}}, Augmentation.dihedral(4).apply(g), "transpose");
        assertArrayEquals(new int[][] {{6, 5, 4}, {3, 2, 1}}, Augmentation.dihedral(2).apply(g), "180°");
        for (int d = 0; d < 8; d++) {
            int inv = Augmentation.inverseDihedral(d);
            assertArrayEquals(g, Augmentation.dihedral(inv).apply(Augmentation.dihedral(d).apply(g)), "d" + d + " then its inverse d" + inv);
        }
    }

    @Test
    void colourPermutationsArePermutationsAndCanKeepTheBackground() {
        SplittableRandom r = new SplittableRandom(5);
        Set<String> seen = new HashSet<>();
        for (int i = 0; i < 300; i++) {
            int[] keep = Augmentation.randomColors(r, true), all = Augmentation.randomColors(r, false);
            assertEquals(0, keep[0]);
            assertEquals(45, java.util.Arrays.stream(keep).sum());
            assertEquals(10, java.util.Arrays.stream(all).distinct().count());
            seen.add(java.util.Arrays.toString(all));
        }
        assertTrue(seen.size() > 290, "permutations are drawn, not repeated");
        int[][] g = {{0, 1}, {2, 0}};
        Augmentation a = new Augmentation(0, new int[] {5, 0, 1, 2, 3, 4, 6, 7, 8, 9}, new int[0]);
        assertArrayEquals(new int[][] {{5, 0}, {1, 5}}, a.apply(g));
        assertThrows(IllegalArgumentException.class, () -> new Augmentation(0, new int[] {0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, new int[0]));
        assertThrows(IllegalArgumentException.class, () -> new Augmentation(8, new int[] {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, new int[0]));
        assertThrows(IllegalArgumentException.class, () -> new Augmentation(0, new int[] {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, new int[] {0, 2}));
    }

    @Test
    void demonstrationsAreReorderedAndRewrittenAlike() {
        List<ArcTask.Pair> demos = List.of(new ArcTask.Pair(new int[][] {{1}}, new int[][] {{2}}), new ArcTask.Pair(new int[][] {{3}}, new int[][] {{4}}),
                new ArcTask.Pair(new int[][] {{5, 6}}, new int[][] {{7}}));
        Augmentation a = new Augmentation(1, new int[] {0, 2, 1, 3, 4, 5, 6, 7, 8, 9}, new int[] {2, 0, 1});
        List<ArcTask.Pair> out = a.applyDemos(demos);
        assertArrayEquals(new int[][] {{5}, {6}}, out.get(0).input(), "demo 2 first, rotated");
        assertArrayEquals(new int[][] {{2}}, out.get(1).input(), "demo 0 second, colour 1 became 2");
        assertArrayEquals(new int[][] {{1}}, out.get(1).output());
        assertThrows(IllegalArgumentException.class, () -> a.applyDemos(demos.subList(0, 2)));
    }

    @Test
    void aPlanStartsWithTheIdentityAndTheSymmetriesAndIsSeeded() {
        List<Augmentation> p = Augmentation.plan(20, 3, 42, true);
        assertEquals(20, p.size());
        assertTrue(p.get(0).isIdentity());
        for (int i = 0; i < 8; i++) assertEquals(Augmentation.dihedral(i), p.get(i));
        for (int i = 8; i < 20; i++) {
            assertEquals(i % 8, p.get(i).dihedral());
            assertEquals(0, p.get(i).colors()[0]);
            assertEquals(3, p.get(i).order().length);
            assertFalse(p.get(i).isIdentity() && i > 8);
        }
        assertEquals(p, Augmentation.plan(20, 3, 42, true));
        assertTrue(!p.equals(Augmentation.plan(20, 3, 43, true)));
    }
}
