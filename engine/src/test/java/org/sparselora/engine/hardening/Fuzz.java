package org.sparselora.engine.hardening;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A small mutation fuzzer for file formats: each case is a valid input mutated from a fixed seed,
 * written to its own directory and handed to a parser under a time limit. A case ends one of
 * four ways: accepted (the mutant is still valid), a clear error (one of the expected exception
 * types, a one-line message naming the input file, no stack trace in it), a crash (any other
 * exception, or files left behind) or a hang (over the time limit). {@link #cases} is a bounded
 * number in the normal build and the full corpus with {@code -Dsparselora.fuzz=full}.
 */
public final class Fuzz {

    /** What a parser run may throw as a clear error. */
    public interface Parser { void parse(Path caseDir) throws Exception; }

    /** Writes one mutated case into its directory. */
    public interface Writer { void write(Random rnd, Path caseDir) throws IOException; }

    public record Tally(String format, int tried, int accepted, int clear, int crashes, int hangs, List<String> samples) {
        @Override
        public String toString() {
            return String.format(Locale.ROOT, "%-16s tried %5d  clear errors %5d  accepted %5d  crashes %d  hangs %d",
                    format, tried, clear, accepted, crashes, hangs);
        }
    }

    private Fuzz() {}

    public static boolean full() { return "full".equals(System.getProperty("sparselora.fuzz")); }

    /** {@code ci} cases in the normal build, {@code full} with -Dsparselora.fuzz=full. */
    public static int cases(int ci, int full) { return full() ? full : ci; }

    public static Tally run(String format, long seed, int n, Path work, Writer writer, Parser parser, List<Class<? extends Exception>> clearTypes)
            throws Exception {
        ExecutorService ex = Executors.newSingleThreadExecutor(Thread.ofPlatform().daemon().factory());
        int accepted = 0, clear = 0, crashes = 0, hangs = 0;
        List<String> samples = new ArrayList<>();
        try {
            for (int i = 0; i < n; i++) {
                Random rnd = new Random(seed * 1_000_003L + i);
                Path dir = Files.createDirectories(work.resolve(format + "-" + i));
                writer.write(rnd, dir);
                List<Path> before = list(dir);
                Future<?> f = ex.submit(() -> {
                    parser.parse(dir);
                    return null;
                });
                String crash = null;
                try {
                    f.get(10, TimeUnit.SECONDS);
                    accepted++;
                } catch (TimeoutException t) {
                    f.cancel(true);
                    hangs++;
                    samples.add(format + " case " + i + ": hang");
                    ex.shutdownNow();
                    ex = Executors.newSingleThreadExecutor(Thread.ofPlatform().daemon().factory());
                } catch (java.util.concurrent.ExecutionException e) {
                    Throwable c = e.getCause();
                    String m = c.getMessage();
                    boolean typed = clearTypes.stream().anyMatch(t -> t.isInstance(c));
                    if (!typed) crash = c.toString();
                    else if (m == null || m.isBlank()) crash = "empty message: " + c;
                    else if (m.contains("\n") || m.contains("\tat ") || m.length() > 2000) crash = "not one clear line: " + m;
                    else if (!m.contains(dir.toString())) crash = "does not name the input: " + m;
                    else clear++;
                    if (crash != null && samples.size() < 20) {
                        java.io.StringWriter sw = new java.io.StringWriter();
                        c.printStackTrace(new java.io.PrintWriter(sw));
                        samples.add(format + " case " + i + ": " + crash + "\n" + sw.toString().lines().limit(6).reduce("", (a, b) -> a + b + "\n"));
                    }
                }
                if (crash == null && !list(dir).equals(before)) crash = "files left behind: " + list(dir);
                if (crash != null) crashes++;
                deleteTree(dir);
            }
        } finally {
            ex.shutdownNow();
        }
        Tally t = new Tally(format, n, accepted, clear, crashes, hangs, samples);
        report(t);
        return t;
    }

    private static void report(Tally t) throws IOException {
        System.out.println("fuzz: " + t + (full() ? " (full)" : " (CI subset)"));
        Path r = Path.of("target", "fuzz-report.txt");
        Files.createDirectories(r.getParent());
        Files.writeString(r, t + (full() ? " (full)" : " (CI subset)") + "\n", java.nio.file.StandardOpenOption.CREATE, java.nio.file.StandardOpenOption.APPEND);
    }

    private static List<Path> list(Path dir) throws IOException {
        try (var s = Files.walk(dir)) {
            return s.sorted().toList();
        }
    }

    static void deleteTree(Path dir) throws IOException {
        try (var s = Files.walk(dir)) {
            for (Path p : s.sorted(java.util.Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
        }
    }

    // ---- mutations -----------------------------------------------------------------------

    static final String[] NUMBERS = {"-1", "0", "1", "2", "3", "7", "-2147483648", "2147483647", "2147483648", "4294967296",
            "9223372036854775807", "99999999999999999999999", "1e308", "-1e308", "1e-320", "0.5", "-0.0", "NaN", "Infinity", "\"x\"", "null",
            "true", "[]", "{}", "[1,2]"};
    private static final Pattern NUMBER = Pattern.compile("-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?");

    /** One of several byte-level mutations (flip, insert, delete, duplicate, truncate, interesting bytes), 1-3 times. */
    public static byte[] mutateBytes(Random r, byte[] in, int from, int to) {
        byte[] b = in.clone();
        int rounds = 1 + r.nextInt(3);
        for (int k = 0; k < rounds && b.length > 0; k++) {
            int lo = Math.min(from, b.length - 1), hi = Math.max(lo + 1, Math.min(to, b.length));
            int at = lo + r.nextInt(hi - lo);
            switch (r.nextInt(7)) {
                case 0 -> b[at] ^= (byte) (1 << r.nextInt(8));
                case 1 -> b[at] = (byte) new int[] {0, 0xFF, '{', '}', '"', ',', ':', '[', ']', '\\', '-', '9', 0x80, '\n'}[r.nextInt(14)];
                case 2 -> { // insert
                    byte[] ins = new byte[1 + r.nextInt(8)];
                    r.nextBytes(ins);
                    b = splice(b, at, 0, ins);
                }
                case 3 -> b = splice(b, at, Math.min(1 + r.nextInt(16), b.length - at), new byte[0]);
                case 4 -> { // duplicate a range
                    int len = Math.min(1 + r.nextInt(32), b.length - at);
                    b = splice(b, at, 0, java.util.Arrays.copyOfRange(b, at, at + len));
                }
                case 5 -> b = java.util.Arrays.copyOf(b, at); // truncate
                default -> b[at] = (byte) r.nextInt(256);
            }
        }
        return b;
    }

    /** Replaces 1-3 numbers of a text with interesting values, or falls back to a byte mutation. */
    public static String mutateText(Random r, String in) {
        if (r.nextInt(3) == 0) return new String(mutateBytes(r, in.getBytes(StandardCharsets.UTF_8), 0, in.length()), StandardCharsets.UTF_8);
        List<int[]> spans = new ArrayList<>();
        Matcher m = NUMBER.matcher(in);
        while (m.find()) spans.add(new int[] {m.start(), m.end()});
        if (spans.isEmpty()) return in;
        String out = in;
        int rounds = 1 + r.nextInt(3);
        for (int k = 0; k < rounds; k++) {
            int[] s = spans.get(r.nextInt(spans.size()));
            if (s[1] > out.length()) continue;
            out = out.substring(0, s[0]) + NUMBERS[r.nextInt(NUMBERS.length)] + out.substring(s[1]);
            spans.clear();
            m = NUMBER.matcher(out);
            while (m.find()) spans.add(new int[] {m.start(), m.end()});
            if (spans.isEmpty()) break;
        }
        return out;
    }

    private static byte[] splice(byte[] b, int at, int remove, byte[] ins) {
        byte[] o = new byte[b.length - remove + ins.length];
        System.arraycopy(b, 0, o, 0, at);
        System.arraycopy(ins, 0, o, at, ins.length);
        System.arraycopy(b, at + remove, o, at + ins.length, b.length - at - remove);
        return o;
    }
}
