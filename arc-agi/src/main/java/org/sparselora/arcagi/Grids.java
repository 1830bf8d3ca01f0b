package org.sparselora.arcagi;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Grids as the text a language model reads and writes: one line of digits per row, no spaces
 * ("012\n340"). {@link #parse} reads the first block of digit-only lines of a generation back into
 * a grid (null when there is none or it is not rectangular); geometric transforms make the
 * augmented copies of a task that test-time training learns from.
 */
public final class Grids {

    private Grids() {}

    public static String render(int[][] g) {
        StringBuilder sb = new StringBuilder();
        for (int r = 0; r < g.length; r++) {
            if (r > 0) sb.append('\n');
            for (int v : g[r]) sb.append((char) ('0' + v));
        }
        return sb.toString();
    }

    public static int[][] parse(String text) {
        List<int[]> rows = new ArrayList<>();
        for (String line : text.split("\n", -1)) {
            String l = line.strip();
            boolean digits = !l.isEmpty() && l.chars().allMatch(ch -> ch >= '0' && ch <= '9');
            if (!digits) {
                if (rows.isEmpty()) continue;
                break;
            }
            if (!rows.isEmpty() && l.length() != rows.get(0).length) return null;
            rows.add(l.chars().map(ch -> ch - '0').toArray());
            if (rows.size() > 30 || l.length() > 30) return null;
        }
        return rows.isEmpty() ? null : rows.toArray(new int[0][]);
    }

    /** Rotated 90° clockwise. */
    public static int[][] rot90(int[][] g) {
        int h = g.length, w = g[0].length;
        int[][] o = new int[w][h];
        for (int r = 0; r < h; r++) for (int c = 0; c < w; c++) o[c][h - 1 - r] = g[r][c];
        return o;
    }

    public static int[][] transpose(int[][] g) {
        int h = g.length, w = g[0].length;
        int[][] o = new int[w][h];
        for (int r = 0; r < h; r++) for (int c = 0; c < w; c++) o[c][r] = g[r][c];
        return o;
    }

    public static boolean same(int[][] a, int[][] b) { return a != null && b != null && Arrays.deepEquals(a, b); }
}
