package org.sparselora.engine.io;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;

/**
 * Writes that leave the target either complete or untouched: content goes to a temporary sibling
 * (same directory, so the final rename is a same-file-system move) and is renamed into place only
 * once fully written and flushed. Used by every writer in {@code io/}.
 */
public final class AtomicFiles {

    /** Writes one file's content. */
    @FunctionalInterface
    public interface FileWriter { void write(Path tmp) throws IOException; }

    private AtomicFiles() {}

    /** Runs {@code writer} on a temporary sibling of {@code target}, then renames it onto target. */
    public static void writeFile(Path target, FileWriter writer) {
        Path abs = target.toAbsolutePath();
        Path dir = abs.getParent();
        Path tmp = null;
        try {
            Files.createDirectories(dir);
            tmp = Files.createTempFile(dir, "." + abs.getFileName() + ".", ".tmp");
            writer.write(tmp);
            moveIntoPlace(tmp, abs);
            tmp = null;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + target + ": " + e.getMessage(), e);
        } finally {
            if (tmp != null) deleteQuietly(tmp);
        }
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
            Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING);
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
