package org.sparselora.engine.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The one atomic writer: a failed write (a full disk, an I/O error) leaves neither a temp file nor
 * a changed target; a symlink at the target is replaced, never written through; files planted
 * under fixed temp names are neither used nor followed.
 */
class AtomicFilesTest {

    @TempDir
    Path dir;

    private List<String> names() throws IOException {
        try (var s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    @Test
    void aFailedWriteLeavesNoTempFileAndTheOldContent() throws Exception {
        Path f = dir.resolve("loss.svg");
        AtomicFiles.writeString(f, "old");
        IOException e = assertThrows(IOException.class, () -> AtomicFiles.write(f, tmp -> {
            Files.writeString(tmp, "half");
            throw new IOException("No space left on device");
        }));
        assertEquals("No space left on device", e.getMessage());
        assertEquals("old", Files.readString(f));
        assertEquals(List.of("loss.svg"), names(), "no temp file left behind");
    }

    @Test
    void aSymlinkAtTheTargetIsReplacedNotFollowed() throws Exception {
        Path victim = Files.writeString(dir.resolve("victim"), "keep");
        Path f = dir.resolve("metrics.jsonl");
        Files.createSymbolicLink(f, victim);
        AtomicFiles.writeString(f, "new");
        assertEquals("keep", Files.readString(victim));
        assertTrue(Files.isRegularFile(f, LinkOption.NOFOLLOW_LINKS));
        assertEquals("new", Files.readString(f));
    }

    @Test
    void plantedTempNamesAreNotFollowed() throws Exception {
        Path victim = Files.writeString(dir.resolve("victim"), "keep");
        for (String n : List.of("loss.svg.tmp", ".loss.svg.tmp", ".loss.svg.1.tmp")) Files.createSymbolicLink(dir.resolve(n), victim);
        AtomicFiles.writeString(dir.resolve("loss.svg"), "plot");
        assertEquals("keep", Files.readString(victim));
        assertEquals("plot", Files.readString(dir.resolve("loss.svg")));
        AtomicFiles.removeStaleTemps(dir.resolve("loss.svg"));
        assertTrue(Files.exists(dir.resolve(".loss.svg.1.tmp"), LinkOption.NOFOLLOW_LINKS), "a planted symlink is not ours to delete");
        assertEquals("keep", Files.readString(victim));
    }
}
