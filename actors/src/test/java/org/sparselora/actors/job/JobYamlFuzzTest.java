package org.sparselora.actors.job;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.cli.CliRunner;
import org.sparselora.engine.hardening.Fuzz;

/**
 * job.yaml under mutation (numbers replaced by edge values, bytes flipped, inserted, cut): every
 * mutant loads (and validates) or fails with one clear error naming the file and key — no other
 * exception, no hang, nothing written. A bounded subset in every build; 1,500 cases with
 * {@code -Dsparselora.fuzz=full}.
 */
class JobYamlFuzzTest {

    @TempDir
    Path work;

    @Test
    void jobYaml() throws Exception {
        String valid = Files.readString(CliRunner.jobFile(work, "fuzz", 8, 2, 3, 0));
        Fuzz.Tally t = Fuzz.run("job-yaml", 20261207L, Fuzz.cases(150, 1500), work,
                (r, d) -> Files.writeString(d.resolve("job.yaml"), Fuzz.mutateText(r, valid)),
                d -> JobSpecs.prepare(JobFiles.load(d.resolve("job.yaml"))),
                List.<Class<? extends Exception>>of(JobSpecException.class, IOException.class));
        assertEquals(0, t.crashes(), t + "\n" + String.join("\n", t.samples()));
        assertEquals(0, t.hangs(), t + "\n" + String.join("\n", t.samples()));
        assertTrue(t.clear() > t.tried() / 4, t.toString());
    }
}
