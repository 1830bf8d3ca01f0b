package org.sparselora.engine.io;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;

/**
 * The one atomic file writer: writes leave the target either complete or untouched. Content goes
 * to a temporary sibling (same directory, so the final rename is a same-file-system move) with a
 * unique, unguessable name created exclusively ({@code O_CREAT|O_EXCL}: a symlink or file planted
 * under any fixed name is never followed or reused), is forced to disk, and only then renamed into
 * place; the rename replaces a symlink at the target itself, never the file it points to. A write
 * that fails (disk full, I/O error) deletes its temporary, so nothing half-written stays behind.
 * Every writer of job outputs (metrics, plots, checkpoints, adapters, configs) goes through here.
 */
public final class AtomicFiles {

    /** Writes one file's content. */
    @FunctionalInterface
    public interface FileWriter { void write(Path tmp) throws IOException; }

    private AtomicFiles() {}

    /** Runs {@code writer} on a temporary sibling of {@code target}, then renames it onto target. */
    public static void writeFile(Path target, FileWriter writer) {
        try {
            write(target, writer);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + target + ": " + e.getMessage(), e);
        }
    }

    /** {@link #writeFile} for callers that handle {@link IOException} themselves. */
    public static void write(Path target, FileWriter writer) throws IOException {
        Path abs = target.toAbsolutePath();
        Path dir = abs.getParent();
        Path tmp = null;
        try {
            Files.createDirectories(dir);
            tmp = Files.createTempFile(dir, "." + abs.getFileName() + ".", ".tmp");
            writer.write(tmp);
            force(tmp);
            moveIntoPlace(tmp, abs);
            tmp = null;
            force(dir);
        } finally {
            if (tmp != null) deleteQuietly(tmp);
        }
    }

    /** Writes {@code text} as UTF-8, atomically. */
    public static void writeString(Path target, CharSequence text) throws IOException {
        write(target, tmp -> Files.writeString(tmp, text, java.nio.charset.StandardCharsets.UTF_8));
    }

    /**
     * Fills a fresh temporary directory next to {@code target}, then puts it in place of target.
     * A directory cannot be atomically renamed over a non-empty one, so an existing target is first
     * renamed aside and deleted only after the new one is in place: a crash in between leaves the
     * old content under {@code .<name>.old-*}, never a half-written target.
     */
    public static void writeDirectory(Path target, FileWriter writer) {
        Path abs = target.toAbsolutePath();
        Path parent = abs.getParent();
        Path tmp = null;
        Path old = null;
        try {
            Files.createDirectories(parent);
            tmp = Files.createTempDirectory(parent, "." + abs.getFileName() + ".tmp-");
            writer.write(tmp);
            if (Files.exists(abs)) {
                if (!Files.isDirectory(abs)) throw new IOException(abs + " exists and is not a directory");
                old = parent.resolve("." + abs.getFileName() + ".old-" + System.nanoTime());
                Files.move(abs, old, StandardCopyOption.ATOMIC_MOVE);
            }
            Files.move(tmp, abs, StandardCopyOption.ATOMIC_MOVE);
            tmp = null;
        } catch (IOException e) {
            if (old != null && !Files.exists(abs)) {
                try { Files.move(old, abs, StandardCopyOption.ATOMIC_MOVE); old = null; } catch (IOException ignored) { }
            }
            throw new UncheckedIOException("cannot write " + target + ": " + e.getMessage(), e);
        } finally {
            if (tmp != null) deleteQuietly(tmp);
            if (old != null) deleteQuietly(old);
        }
    }

    private static void moveIntoPlace(Path tmp, Path target) throws IOException {
        try {
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (AtomicMoveNotSupportedException e) {
            throw new IOException("the file system of " + target.getParent() + " cannot rename atomically", e);
        }
    }

    /** Forces a file's content (or a directory's entries: makes a rename durable) to disk; not every file system lets a directory be opened. */
    private static void force(Path p) {
        try (FileChannel ch = FileChannel.open(p, Files.isDirectory(p) ? StandardOpenOption.READ : StandardOpenOption.WRITE)) {
            ch.force(true);
        } catch (IOException ignored) {
            // best effort for directories; a file that cannot be forced fails its rename's durability only
        }
    }

    /** Removes this writer's temporaries (named {@code .<name>.*.tmp}) that a killed process left next to {@code target}. */
    public static void removeStaleTemps(Path target) {
        Path abs = target.toAbsolutePath();
        if (!Files.isDirectory(abs.getParent())) return;
        try (var ds = Files.newDirectoryStream(abs.getParent(), "." + abs.getFileName() + ".*.tmp")) {
            for (Path p : ds) if (Files.isRegularFile(p, java.nio.file.LinkOption.NOFOLLOW_LINKS)) Files.deleteIfExists(p);
        } catch (IOException ignored) {
            // best effort: a leftover temp file is harmless and clearly named
        }
    }

    /** Deletes a file or a directory tree; errors are ignored (best-effort cleanup). */
    public static void deleteQuietly(Path p) {
        try {
            if (!Files.exists(p)) return;
            Files.walkFileTree(p, new SimpleFileVisitor<>() {
                @Override public FileVisitResult visitFile(Path f, BasicFileAttributes a) throws IOException {
                    Files.deleteIfExists(f);
                    return FileVisitResult.CONTINUE;
                }
                @Override public FileVisitResult postVisitDirectory(Path d, IOException e) throws IOException {
                    Files.deleteIfExists(d);
                    return FileVisitResult.CONTINUE;
                }
            });
        } catch (IOException ignored) {
            // best effort: a leftover temp file is harmless and clearly named
        }
    }
}
