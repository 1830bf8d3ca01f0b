package org.sparselora.arcagi;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * ARC pairs as {@link ArcTokenizer} ids, and generated ids back to a grid.
 *
 * <pre>
 * grid   = (cell… ROW_END)…                 one colour token per cell, every row closed by ROW_END
 * pair   = INPUT grid OUTPUT grid EOS
 * prompt = BOS pair(demo)… INPUT grid(test input) OUTPUT
 * target = grid(test output) EOS            the tokens that carry the loss
 * </pre>
 *
 * A demonstration ends with EOS exactly like the target does, so the model learns one thing: an
 * output grid is followed by EOS.
 */
public final class ArcFormat {

    private ArcFormat() {}

    /** Largest grid side in ARC. */
    public static final int MAX_SIDE = 30;

    /** Tokens of the longest possible target (30 rows of 30 cells and a row end, then EOS). */
    public static final int MAX_TARGET = MAX_SIDE * (MAX_SIDE + 1) + 1;

    /** Tokens of {@code g}: each row's cells then ROW_END. */
    public static int[] grid(int[][] g) {
        int w = g[0].length;
        int[] out = new int[g.length * (w + 1)];
        int n = 0;
        for (int[] row : g) {
            for (int c : row) out[n++] = ArcTokenizer.color(c);
            out[n++] = ArcTokenizer.ROW_END;
        }
        return out;
    }

    /** BOS, the demonstrations, then the query's input and the output marker: what the model continues. */
    public static int[] prompt(List<ArcTask.Pair> demos, int[][] queryInput) {
        IntList ids = new IntList();
        ids.add(ArcTokenizer.BOS);
        for (ArcTask.Pair p : demos) {
            ids.add(ArcTokenizer.INPUT).addAll(grid(p.input())).add(ArcTokenizer.OUTPUT).addAll(grid(p.output())).add(ArcTokenizer.EOS);
        }
        ids.add(ArcTokenizer.INPUT).addAll(grid(queryInput)).add(ArcTokenizer.OUTPUT);
        return ids.toArray();
    }

    /** The query's output grid then EOS: the loss-carrying continuation of {@link #prompt}. */
    public static int[] target(int[][] queryOutput) {
        int[] g = grid(queryOutput);
        int[] out = Arrays.copyOf(g, g.length + 1);
        out[g.length] = ArcTokenizer.EOS;
        return out;
    }

    /** A decoded generation: the grid, or why the ids are not one. */
    public record Decoded(int[][] grid, String error) {
        public boolean ok() { return grid != null; }
    }

    /**
     * The grid of generated ids. {@code ids} may end with EOS (what follows it is ignored); without
     * one, {@code complete} says whether generation stopped on EOS (the engine's generator drops the
     * EOS it stops at) — a generation cut off by its token budget is malformed, never a grid.
     * Rejected: any token other than cells and row ends, an empty row, rows of different widths
     * (ragged), a last row without its row end, more than 30 rows or columns.
     */
    public static Decoded decode(int[] ids, boolean complete) {
        int end = ids.length;
        for (int i = 0; i < ids.length; i++)
            if (ids[i] == ArcTokenizer.EOS) {
                end = i;
                complete = true;
                break;
            }
        if (!complete) return new Decoded(null, "no EOS: generation stopped at its token limit");
        if (end == 0) return new Decoded(null, "empty output");
        List<int[]> rows = new ArrayList<>();
        IntList row = new IntList();
        for (int i = 0; i < end; i++) {
            int id = ids[i];
            int c = ArcTokenizer.colorOf(id);
            if (c >= 0) {
                if (row.size() == MAX_SIDE) return new Decoded(null, "row " + rows.size() + " is longer than " + MAX_SIDE + " cells");
                row.add(c);
            } else if (id == ArcTokenizer.ROW_END) {
                if (row.size() == 0) return new Decoded(null, "row " + rows.size() + " is empty");
                if (!rows.isEmpty() && row.size() != rows.get(0).length)
                    return new Decoded(null, "ragged: row " + rows.size() + " has " + row.size() + " cells, row 0 has " + rows.get(0).length);
                if (rows.size() == MAX_SIDE) return new Decoded(null, "more than " + MAX_SIDE + " rows");
                rows.add(row.toArray());
                row = new IntList();
            } else {
                return new Decoded(null, "token " + id + " (" + new ArcTokenizer().decodeToken(id).replace("\n", "\\n") + ") at " + i + " is not a cell or row end");
            }
        }
        if (row.size() > 0) return new Decoded(null, "the last row has no row end");
        return new Decoded(rows.toArray(new int[0][]), null);
    }

    /** A growable int array (the formats build many small id lists). */
    static final class IntList {
        private int[] a = new int[64];
        private int n;

        IntList add(int v) {
            if (n == a.length) a = Arrays.copyOf(a, n * 2);
            a[n++] = v;
            return this;
        }

        IntList addAll(int[] vs) {
            for (int v : vs) add(v);
            return this;
        }

        int size() { return n; }

        int[] toArray() { return Arrays.copyOf(a, n); }
    }
}
