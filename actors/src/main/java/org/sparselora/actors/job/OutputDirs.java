package org.sparselora.actors.job;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryStream;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import org.sparselora.actors.pipeline.CheckpointStore;
import org.sparselora.actors.pipeline.LossPlot;
import org.sparselora.actors.pipeline.MetricsLog;
import org.sparselora.engine.io.AtomicFiles;

/**
 * The pre-flight of a job's {@code output_dir}, before any actor starts: the directory exists or
 * can be created (not a file, not under one, not on a file system that refuses it), this run may
 * write into it, and it holds nothing a run would destroy — it is empty, or it is this job's own
 * earlier run being resumed (a checkpoint is there), or the caller said overwrite. The run then
 * holds an exclusive lock ({@value #LOCK}, an OS file lock, so it ends with the process even when
 * killed) until it ends: two runs or two resumes of one directory, in one process or two, cannot
 * run at once. Every problem is a {@link JobSpecException} on {@code output_dir} saying what is
 * wrong and what to do.
 */
public final class OutputDirs {

    public static final String LOCK = ".sparselora.lock";
    /** What a run writes into output_dir: removed first by an overwriting run, so no old file is mistaken for a new one. */
    static final List<String> OUTPUTS = List.of("checkpoint", "adapter", "model", MetricsLog.FILE, LossPlot.FILE, org.sparselora.actors.pipeline.JobSupervisor.REPLICAS_FILE);

    private OutputDirs() {}

    /** A locked output directory; closing releases the lock (the lock file stays: deleting it would race a new locker). */
    public static final class Claim implements AutoCloseable {
        private final Path dir;
        private final FileChannel channel;
        private final FileLock lock;

        Claim(Path dir, FileChannel channel, FileLock lock) {
            this.dir = dir;
            this.channel = channel;
            this.lock = lock;
        }

        public Path dir() { return dir; }

        @Override
        public void close() {
            try {
                lock.release();
            } catch (IOException ignored) {
                // the channel's close below releases it too
            }
            try {
                channel.close();
            } catch (IOException ignored) {
            }
        }
    }

    /**
     * Checks {@code dir} (canonical) and takes its lock.
     *
     * @param resume    the run continues the checkpoint in dir (which must be there)
     * @param overwrite a non-empty dir that is not being resumed is cleared of a run's outputs instead of refused
     */
    public static Claim claim(Path dir, boolean resume, boolean overwrite) {
        for (Path p = dir; p != null; p = p.getParent()) {
            if (Files.exists(p, LinkOption.NOFOLLOW_LINKS) && !Files.isDirectory(p)) {
                throw fail(p.equals(dir) ? dir + " exists and is not a directory"
                        : dir + " is under " + p + ", which is a file, not a directory");
            }
        }
        try {
            Files.createDirectories(dir);
        } catch (IOException e) {
            throw fail("cannot create " + dir + " (" + reason(e) + ")");
        }
        FileChannel ch;
        try {
            ch = FileChannel.open(dir.resolve(LOCK), StandardOpenOption.CREATE, StandardOpenOption.WRITE, LinkOption.NOFOLLOW_LINKS);
        } catch (IOException e) {
            throw fail("cannot write into " + dir + " (" + reason(e) + ")");
        }
        FileLock lock;
        try {
            lock = ch.tryLock();
        } catch (OverlappingFileLockException e) {
            lock = null;
        } catch (IOException e) {
            closeQuietly(ch);
            throw fail("cannot lock " + dir.resolve(LOCK) + " (" + reason(e) + ")");
        }
        if (lock == null) {
            closeQuietly(ch);
            throw fail(dir + " is in use by another run (it holds the lock " + LOCK + "); wait for it to end or choose another output_dir");
        }
        Claim claim = new Claim(dir, ch, lock);
        try {
            check(dir, resume, overwrite);
        } catch (RuntimeException e) {
            claim.close();
            throw e;
        }
        return claim;
    }

    private static void check(Path dir, boolean resume, boolean overwrite) {
        List<String> held = entries(dir);
        boolean checkpoint = new CheckpointStore(dir).exists();
        if (resume) {
            if (!checkpoint) throw fail(dir + " holds no checkpoint to resume from (" + new CheckpointStore(dir).file() + " is missing)");
            return;
        }
        if (held.isEmpty()) return;
        if (!overwrite) {
            String what = String.join(", ", held.subList(0, Math.min(5, held.size()))) + (held.size() > 5 ? ", …" : "");
            throw fail(dir + " is not empty (it holds " + what + ")" + (checkpoint
                    ? ": resume the run it holds (train --resume / ResumeJob), choose another output_dir, or start over with --overwrite"
                    : ": choose an empty or new output_dir, or pass --overwrite to replace a run's outputs there"));
        }
        // overwrite: the earlier run's outputs go, so the new run's files are never mixed with them
        for (String o : OUTPUTS) AtomicFiles.deleteQuietly(dir.resolve(o));
        for (String o : OUTPUTS)
            if (Files.exists(dir.resolve(o), LinkOption.NOFOLLOW_LINKS)) throw fail("--overwrite: cannot remove " + dir.resolve(o));
    }

    /** The names in dir other than the lock file, sorted. */
    private static List<String> entries(Path dir) {
        List<String> out = new ArrayList<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir)) {
            for (Path p : ds) {
                String n = p.getFileName().toString();
                if (!n.equals(LOCK)) out.add(n);
            }
        } catch (IOException e) {
            throw fail("cannot list " + dir + " (" + reason(e) + ")");
        }
        out.sort(null);
        return out;
    }

    private static JobSpecException fail(String why) { return new JobSpecException("output_dir", why); }

    /** An I/O failure in a few words, without a stack trace or the file's content. */
    static String reason(IOException e) {
        if (e instanceof AccessDeniedException) return "permission denied";
        if (e instanceof NoSuchFileException) return "no such file or directory";
        if (e instanceof java.nio.file.FileAlreadyExistsException) return "a file of that name exists";
        if (e instanceof FileSystemException f && f.getReason() != null) return f.getReason();
        return e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
    }

    private static void closeQuietly(FileChannel ch) {
        try {
            ch.close();
        } catch (IOException ignored) {
        }
    }
}
