package org.sparselora.engine.io;

import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Locates {@code shared/data} for tests tagged {@code shared-data}: the directory given by the
 * system property {@code sparselora.shared} (Maven passes {@code <repo>/../shared}), else
 * {@code ../shared} from the working directory or its parent. A missing directory or file FAILS the
 * test with the path to pass; it never skips.
 */
public final class SharedData {

    private SharedData() {}

    public static Path dataDir() {
        String prop = System.getProperty("sparselora.shared");
        Path[] candidates = prop != null && !prop.isBlank()
                ? new Path[] {Path.of(prop)}
                : new Path[] {Path.of("..", "shared"), Path.of("..", "..", "shared")};
        for (Path c : candidates) {
            Path d = c.resolve("data");
            if (Files.isDirectory(d)) return d.toAbsolutePath().normalize();
        }
        return fail("shared data directory not found: " + candidates[0].resolve("data").toAbsolutePath().normalize()
                + " (pass -Dsparselora.shared=DIR where DIR/data holds the shared models and datasets)");
    }

    /** A file under shared/data; fails the test (never skips) when it is missing. */
    public static Path file(String relative) {
        Path p = dataDir().resolve(relative);
        if (!Files.exists(p)) fail("shared data file missing: " + p + " (pass -Dsparselora.shared=DIR)");
        return p;
    }
}
