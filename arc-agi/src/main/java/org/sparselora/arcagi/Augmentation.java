package org.sparselora.arcagi;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

/**
 * One invertible rewrite of a task: a symmetry of the square (applied to every grid alike), a
 * permutation of the ten colours (applied to every cell alike) and an order of the demonstrations.
 * The rule of a task survives all three, so a model can train on — and answer — any rewrite, and an
 * answer maps back through {@link #invert}.
 *
 * @param dihedral 0–3: rotation by {@code dihedral}·90° clockwise; 4–7: transpose, then rotation by
 *                 {@code (dihedral−4)}·90° clockwise (these four are the reflections)
 * @param colors   {@code colors[c]} is the new colour of colour {@code c}; a permutation of 0–9
 * @param order    the demonstrations in their new order ({@code order[i]} = old index of the i-th),
 *                 a permutation of 0..n−1, or empty to keep the order
 */
public record Augmentation(int dihedral, int[] colors, int[] order) {

    public static final int DIHEDRAL = 8;
    private static final int[] NO_COLOR_CHANGE = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};

    public Augmentation {
        if (dihedral < 0 || dihedral >= DIHEDRAL) throw new IllegalArgumentException("dihedral must be 0-7, got " + dihedral);
        if (!isPermutation(colors) || colors.length != 10) throw new IllegalArgumentException("colors must permute 0-9, got " + Arrays.toString(colors));
        if (!isPermutation(order)) throw new IllegalArgumentException("order must permute 0..n-1, got " + Arrays.toString(order));
        colors = colors.clone();
        order = order.clone();
    }

    public static final Augmentation IDENTITY = new Augmentation(0, NO_COLOR_CHANGE, new int[0]);

    public static Augmentation dihedral(int d) { return new Augmentation(d, NO_COLOR_CHANGE, new int[0]); }

    private static boolean isPermutation(int[] p) {
        boolean[] seen = new boolean[p.length];
        for (int v : p) {
            if (v < 0 || v >= p.length || seen[v]) return false;
            seen[v] = true;
        }
        return true;
    }

    public boolean isIdentity() { return dihedral == 0 && Arrays.equals(colors, NO_COLOR_CHANGE) && isIdentityOrder(order); }

    private static boolean isIdentityOrder(int[] o) {
        for (int i = 0; i < o.length; i++) if (o[i] != i) return false;
        return true;
    }

    /** {@code g} under this augmentation's symmetry and colours. */
    public int[][] apply(int[][] g) { return recolor(symmetry(g, dihedral), colors); }

    /** The inverse of {@link #apply}: {@code invert(apply(g))} equals {@code g}. */
    public int[][] invert(int[][] g) {
        int[] back = new int[10];
        for (int c = 0; c < 10; c++) back[colors[c]] = c;
        return symmetry(recolor(g, back), inverseDihedral(dihedral));
    }

    /** The demonstrations reordered and rewritten; the query pair is rewritten the same way (order aside). */
    public List<ArcTask.Pair> applyDemos(List<ArcTask.Pair> demos) {
        if (order.length != 0 && order.length != demos.size())
            throw new IllegalArgumentException("augmentation orders " + order.length + " demonstrations, the task has " + demos.size());
        List<ArcTask.Pair> out = new ArrayList<>(demos.size());
        for (int i = 0; i < demos.size(); i++) out.add(apply(demos.get(order.length == 0 ? i : order[i])));
        return out;
    }

    public ArcTask.Pair apply(ArcTask.Pair p) { return new ArcTask.Pair(apply(p.input()), p.output() == null ? null : apply(p.output())); }

    /** The inverse symmetry: rotations by k undo by 4−k; the four reflections are their own inverses. */
    static int inverseDihedral(int d) { return d < 4 ? (4 - d) % 4 : d; }

    static int[][] symmetry(int[][] g, int d) {
        int[][] x = d >= 4 ? transpose(g) : g;
        for (int k = 0; k < d % 4; k++) x = rot90(x);
        return x;
    }

    static int[][] rot90(int[][] g) {
        int h = g.length, w = g[0].length;
        int[][] o = new int[w][h];
        for (int r = 0; r < h; r++) for (int c = 0; c < w; c++) o[c][h - 1 - r] = g[r][c];
        return o;
    }

    static int[][] transpose(int[][] g) {
        int h = g.length, w = g[0].length;
        int[][] o = new int[w][h];
        for (int r = 0; r < h; r++) for (int c = 0; c < w; c++) o[c][r] = g[r][c];
        return o;
    }

    private static int[][] recolor(int[][] g, int[] map) {
        int[][] o = new int[g.length][];
        for (int r = 0; r < g.length; r++) {
            o[r] = new int[g[r].length];
            for (int c = 0; c < g[r].length; c++) o[r][c] = map[g[r][c]];
        }
        return o;
    }

    /** A uniformly random permutation of the colours; with {@code keepBackground} colour 0 stays 0. */
    public static int[] randomColors(SplittableRandom rnd, boolean keepBackground) {
        int[] p = NO_COLOR_CHANGE.clone();
        shuffle(p, keepBackground ? 1 : 0, rnd);
        return p;
    }

    /** A uniformly random order of {@code n} demonstrations. */
    public static int[] randomOrder(SplittableRandom rnd, int n) {
        int[] p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        shuffle(p, 0, rnd);
        return p;
    }

    private static void shuffle(int[] p, int from, SplittableRandom rnd) {
        for (int i = p.length - 1; i > from; i--) {
            int j = from + rnd.nextInt(i - from + 1);
            int t = p[i];
            p[i] = p[j];
            p[j] = t;
        }
    }

    /**
     * {@code count} augmentations for a task of {@code demos} demonstrations: the eight symmetries
     * with colours and order unchanged come first (the identity first of all), then symmetries in
     * turn with random colours and a random demonstration order — all drawn from {@code seed}.
     */
    public static List<Augmentation> plan(int count, int demos, long seed, boolean keepBackground) {
        SplittableRandom rnd = new SplittableRandom(seed);
        List<Augmentation> out = new ArrayList<>(count);
        for (int i = 0; i < count; i++) {
            if (i < DIHEDRAL) out.add(dihedral(i));
            else out.add(new Augmentation(i % DIHEDRAL, randomColors(rnd, keepBackground), randomOrder(rnd, demos)));
        }
        return out;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Augmentation a && a.dihedral == dihedral && Arrays.equals(a.colors, colors) && Arrays.equals(a.order, order);
    }

    @Override
    public int hashCode() { return 31 * (31 * dihedral + Arrays.hashCode(colors)) + Arrays.hashCode(order); }

    @Override
    public String toString() {
        return "Augmentation[d" + dihedral + " colors" + Arrays.toString(colors) + (order.length == 0 ? "" : " order" + Arrays.toString(order)) + "]";
    }
}
