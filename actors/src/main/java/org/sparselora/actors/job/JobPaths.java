package org.sparselora.actors.job;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.UnaryOperator;
import java.util.regex.Pattern;
import org.sparselora.proto.control.JobSpec;

/**
 * The file-system paths of a {@link JobSpec} (model, tokenizer, data.path, sparsity, output_dir),
 * keyed by their job.yaml names, and their canonical form: absolute, {@code .}/{@code ..} removed,
 * symlinks resolved for the part that exists. Two spellings of one directory ({@code /x/dup},
 * {@code /x/./dup}, a symlink to it) have one canonical form, which is what "in use" checks and
 * path confinement compare. Values with a scheme ({@code toy:…}, {@code random:llama3-8b}) are not
 * paths; {@code random:<config.json>} names a file.
 */
public final class JobPaths {

    private static final Pattern SCHEME = Pattern.compile("^[A-Za-z][A-Za-z0-9+.-]+:.*");
    private static final String RANDOM = "random:";

    private JobPaths() {}

    /** The path-valued fields that are set, by job.yaml key, with the file path each names. */
    public static Map<String, String> of(JobSpec s) {
        Map<String, String> m = new LinkedHashMap<>();
        put(m, "model", s.getModel());
        put(m, "tokenizer", s.getTokenizer());
        put(m, "data.path", s.getData().getPath());
        if (s.hasSparsityPath()) put(m, "sparsity", s.getSparsityPath());
        put(m, "output_dir", s.getOutputDir());
        return m;
    }

    private static void put(Map<String, String> m, String key, String v) {
        String p = filePart(v);
        if (p != null) m.put(key, p);
    }

    /** The file path a value names, or null when it names none. */
    static String filePart(String v) {
        if (v == null || v.isEmpty()) return null;
        if (v.startsWith(RANDOM)) {
            String rest = v.substring(RANDOM.length());
            return rest.endsWith(".json") || rest.contains("/") ? rest : null;
        }
        return SCHEME.matcher(v).matches() ? null : v;
    }

    /** Every path field rewritten by {@code f} (its file part; a {@code random:} prefix is kept). */
    public static JobSpec map(JobSpec s, UnaryOperator<String> f) {
        JobSpec.Builder b = s.toBuilder();
        b.setModel(mapValue(s.getModel(), f));
        b.setTokenizer(mapValue(s.getTokenizer(), f));
        b.setData(s.getData().toBuilder().setPath(mapValue(s.getData().getPath(), f)));
        if (s.hasSparsityPath()) b.setSparsityPath(mapValue(s.getSparsityPath(), f));
        b.setOutputDir(mapValue(s.getOutputDir(), f));
        return b.build();
    }

    private static String mapValue(String v, UnaryOperator<String> f) {
        String p = filePart(v);
        if (p == null) return v;
        return v.startsWith(RANDOM) ? RANDOM + f.apply(p) : f.apply(p);
    }

    /** Canonical form of every path field, relative ones taken against {@code base}. */
    public static JobSpec canonical(JobSpec s, Path base) {
        Map<String, String> names = of(s);
        return map(s, p -> canonical(base, p, names.entrySet().stream().filter(e -> e.getValue().equals(p)).map(Map.Entry::getKey).findFirst().orElse("path")).toString());
    }

    /**
     * {@code p} made absolute against {@code base}, normalised, with its longest existing prefix
     * resolved through symlinks ({@link Path#toRealPath}); the rest is appended as written.
     */
    public static Path canonical(Path base, String p, String field) {
        Path q;
        try {
            q = Path.of(p);
        } catch (InvalidPathException e) {
            throw new JobSpecException(field, "'" + p + "' is not a valid path");
        }
        Path abs = (q.isAbsolute() ? q : base.resolve(q)).toAbsolutePath().normalize();
        Path existing = abs;
        while (existing != null && !Files.exists(existing, LinkOption.NOFOLLOW_LINKS)) existing = existing.getParent();
        if (existing == null) return abs;
        try {
            Path real = existing.toRealPath();
            return real.resolve(existing.relativize(abs)).normalize();
        } catch (IOException e) {
            // a dangling symlink or an unreadable directory on the way: where it leads is unknown
            throw new JobSpecException(field, "'" + p + "' cannot be resolved (" + OutputDirs.reason(e) + " at " + existing + ")");
        }
    }
}
