package org.sparselora.arcagi;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * One ARC-AGI task file: {@code {"train": [{"input": grid, "output": grid}, …], "test": [{"input":
 * grid, "output": grid?}]}}, a grid being rows of ints 0–9, rectangular, at most 30×30 (docs/METHOD.md#data-formats).
 * Loading checks all of it and names the file and the offending field.
 */
public record ArcTask(String id, List<Pair> train, List<Pair> test) {

    /** @param output null for a test pair without its answer */
    public record Pair(int[][] input, int[][] output) {}

    private static final ObjectMapper JSON = new ObjectMapper();

    public static ArcTask load(Path file) throws IOException {
        JsonNode root;
        try {
            root = JSON.readTree(file.toFile());
        } catch (IOException e) {
            throw new IOException(file + ": not valid JSON: " + e.getMessage(), e);
        }
        String id = file.getFileName().toString().replaceFirst("\\.json$", "");
        if (root == null || !root.isObject()) throw new IOException(file + ": the top level must be an object with 'train' and 'test'");
        List<Pair> train = pairs(file, root, "train", true), test = pairs(file, root, "test", false);
        if (train.isEmpty()) throw new IOException(file + ": 'train' has no pairs");
        if (test.isEmpty()) throw new IOException(file + ": 'test' has no pairs");
        return new ArcTask(id, train, test);
    }

    private static List<Pair> pairs(Path file, JsonNode root, String key, boolean outputRequired) throws IOException {
        JsonNode arr = root.get(key);
        if (arr == null || !arr.isArray()) throw new IOException(file + ": '" + key + "' must be a list of pairs");
        List<Pair> out = new ArrayList<>();
        for (int i = 0; i < arr.size(); i++) {
            String at = key + "[" + i + "]";
            JsonNode p = arr.get(i);
            if (!p.isObject()) throw new IOException(file + ": " + at + " must be an object with 'input' and 'output'");
            int[][] in = grid(file, at + ".input", p.get("input"));
            JsonNode o = p.get("output");
            if (o == null && outputRequired) throw new IOException(file + ": " + at + ".output is missing");
            out.add(new Pair(in, o == null ? null : grid(file, at + ".output", o)));
        }
        return out;
    }

    static int[][] grid(Path file, String at, JsonNode g) throws IOException {
        if (g == null || !g.isArray() || g.isEmpty()) throw new IOException(file + ": " + at + " must be a non-empty list of rows");
        if (g.size() > 30) throw new IOException(file + ": " + at + " has " + g.size() + " rows (at most 30)");
        int[][] rows = new int[g.size()][];
        for (int r = 0; r < g.size(); r++) {
            JsonNode row = g.get(r);
            if (!row.isArray() || row.isEmpty() || row.size() > 30)
                throw new IOException(file + ": " + at + "[" + r + "] must be a list of 1 to 30 cells");
            if (r > 0 && row.size() != rows[0].length)
                throw new IOException(file + ": " + at + "[" + r + "] has " + row.size() + " cells, row 0 has " + rows[0].length);
            rows[r] = new int[row.size()];
            for (int c = 0; c < row.size(); c++) {
                JsonNode v = row.get(c);
                if (!v.isInt() || v.intValue() < 0 || v.intValue() > 9)
                    throw new IOException(file + ": " + at + "[" + r + "][" + c + "] must be an integer 0-9, got " + v);
                rows[r][c] = v.intValue();
            }
        }
        return rows;
    }
}
