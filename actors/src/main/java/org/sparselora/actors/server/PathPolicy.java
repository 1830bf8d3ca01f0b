package org.sparselora.actors.server;

import io.grpc.Status;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.sparselora.actors.job.JobPaths;
import org.sparselora.actors.job.JobSpecException;
import org.sparselora.proto.control.JobSpec;

/**
 * Which files a remote client may make the server read or write. Every path of a submitted job
 * (model, tokenizer, data, sparsity, output_dir) is resolved — relative ones against the first
 * root, {@code ..} removed, symlinks followed as far as the path exists — and must lie inside one
 * of the roots ({@code serve --root DIR}, repeatable; the server's working directory when none is
 * given); otherwise the job is refused with PERMISSION_DENIED before any file is opened. The
 * server process's own rights would otherwise be every client's rights. The check compares the
 * resolved form, and the job then runs with that form, so a later {@code ..} or a symlink in the
 * written path changes nothing; a symlink swapped in under a root after the check is not defended
 * against (keep roots writable by trusted clients only).
 */
public final class PathPolicy {

    private final List<Path> roots;

    public PathPolicy(List<Path> roots) {
        if (roots.isEmpty()) throw new IllegalArgumentException("at least one root");
        this.roots = roots.stream().map(r -> {
            if (!Files.isDirectory(r)) throw new IllegalArgumentException("--root " + r + ": not a directory");
            return JobPaths.canonical(Path.of("").toAbsolutePath(), r.toString(), "--root");
        }).toList();
    }

    /** The server's working directory as the only root. */
    public static PathPolicy workingDirectory() { return new PathPolicy(List.of(Path.of("").toAbsolutePath())); }

    public List<Path> roots() { return roots; }

    /** The spec with every path canonical; PERMISSION_DENIED naming the first field outside the roots. */
    public JobSpec confine(JobSpec spec) {
        JobSpec c;
        try {
            c = JobPaths.canonical(spec, roots.get(0));
        } catch (JobSpecException e) {
            throw Status.INVALID_ARGUMENT.withDescription(e.getMessage()).asRuntimeException();
        }
        for (Map.Entry<String, String> e : JobPaths.of(c).entrySet()) {
            Path p = Path.of(e.getValue());
            if (roots.stream().noneMatch(p::startsWith))
                throw Status.PERMISSION_DENIED.withDescription(e.getKey() + ": '" + shorten(JobPaths.of(spec).get(e.getKey()))
                        + "' is outside the directories this server lets clients use (" + roots.size() + " root" + (roots.size() == 1 ? "" : "s")
                        + ", set by serve --root)").asRuntimeException();
        }
        return c;
    }

    private static String shorten(String s) { return s.length() > 200 ? s.substring(0, 200) + "…" : s; }
}
