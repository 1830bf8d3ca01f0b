package org.sparselora.engine.eval;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * How a generated answer is compared with the record's expected one. One owner of answer
 * extraction, used by {@code sparselora eval} and by evaluation during training.
 *
 * <ul>
 *   <li>{@code GSM8K}: the last number in the generated text (commas removed) against the expected
 *       number, equal within 1e-3 — the rule of the LLM-Adapters evaluation that the SparseLoRA
 *       reference uses for its math sets (GSM8K, SVAMP, AddSub, …);</li>
 *   <li>{@code EXACT}: the generated text, trimmed, equals the expected text, trimmed;</li>
 *   <li>{@code ARC}: the first grid in the generated text (rows of digits 0–9, one row per line,
 *       optional spaces or commas between cells) equals the expected grid cell for cell.</li>
 * </ul>
 */
public enum EvalTask {
    GSM8K {
        @Override public String extract(String generated) {
            Matcher m = NUMBER.matcher(generated.replace(",", ""));
            String last = null;
            while (m.find()) last = m.group();
            return last;
        }

        @Override public boolean matches(String extracted, String expected) {
            if (extracted == null) return false;
            Double want = parseNumber(expected);
            if (want == null) throw new IllegalArgumentException("the expected answer is not a number (task gsm8k)");
            Double got = parseNumber(extracted);
            return got != null && Math.abs(got - want) <= 1e-3;
        }
    },
    EXACT {
        @Override public String extract(String generated) { return generated.strip(); }

        @Override public boolean matches(String extracted, String expected) { return extracted != null && extracted.equals(expected.strip()); }
    },
    ARC {
        @Override public String extract(String generated) {
            int[][] g = parseGrid(generated);
            return g == null ? null : gridText(g);
        }

        @Override public boolean matches(String extracted, String expected) {
            if (extracted == null) return false;
            int[][] want = parseGrid(expected);
            if (want == null) throw new IllegalArgumentException("the expected answer is not a grid (task arc)");
            return extracted.equals(gridText(want));
        }
    };

    private static final Pattern NUMBER = Pattern.compile("-?\\d+(?:\\.\\d+)?");

    /** The answer as this task reads it from generated text, or null when there is none. */
    public abstract String extract(String generated);

    /** Whether an extracted answer counts as correct against the record's expected answer. */
    public abstract boolean matches(String extracted, String expected);

    public static EvalTask parse(String name) {
        return switch (name.toLowerCase(Locale.ROOT)) {
            case "gsm8k", "math" -> GSM8K;
            case "exact" -> EXACT;
            case "arc" -> ARC;
            default -> throw new IllegalArgumentException("unknown eval task '" + name + "' (gsm8k, exact, arc)");
        };
    }

    public String id() { return name().toLowerCase(Locale.ROOT); }

    static Double parseNumber(String s) {
        if (s == null) return null;
        String t = s.strip().replace(",", "");
        Matcher m = NUMBER.matcher(t);
        if (!m.find()) return null;
        try {
            return Double.valueOf(m.group());
        } catch (NumberFormatException e) {
            return null;
        }
    }

    /**
     * The first block of consecutive lines that are rows of digits (cells separated by nothing,
     * spaces or commas; brackets ignored), all of one width; null when there is none or it is ragged.
     * A JSON grid such as {@code [[1,2],[3,4]]} on one line is read too.
     */
    public static int[][] parseGrid(String text) {
        String s = text.strip();
        if (s.startsWith("[[")) s = s.replace("],", "]\n");
        List<int[]> rows = new ArrayList<>();
        for (String raw : s.split("\n", -1)) {
            String line = raw.replaceAll("[\\[\\],\\s]", "");
            boolean digits = !line.isEmpty() && line.chars().allMatch(ch -> ch >= '0' && ch <= '9');
            if (digits) {
                rows.add(line.chars().map(ch -> ch - '0').toArray());
            } else if (!rows.isEmpty()) {
                break;
            }
        }
        if (rows.isEmpty()) return null;
        int w = rows.get(0).length;
        for (int[] r : rows) if (r.length != w) return null;
        return rows.toArray(int[][]::new);
    }

    static String gridText(int[][] g) {
        StringBuilder b = new StringBuilder();
        for (int[] row : g) {
            if (!b.isEmpty()) b.append('\n');
            for (int v : row) b.append((char) ('0' + v));
        }
        return b.toString();
    }
}
