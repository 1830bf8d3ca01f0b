package org.sparselora.actors.job;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.proto.control.JobSpec;

/**
 * The keys that set how long and in what chunks a job trains and how its memory is spent:
 * {@code epochs} (instead of {@code steps}), {@code grad_accum_steps}, {@code gradient_checkpointing}
 * and {@code quantize} — parsed, defaulted, validated with errors naming the key, and written back.
 */
class TrainingLengthKeysTest {

    @TempDir
    Path dir;

    static final String BASE = """
            model: models/llama
            data: {path: data/train.json, format: alpaca}
            batch_size: 4
            seq_len: 128
            output_dir: runs/x
            """;

    JobSpec load(String extra) throws Exception {
        Path f = dir.resolve("job.yaml");
        Files.writeString(f, BASE + extra);
        return JobFiles.load(f);
    }

    String error(String extra) {
        return assertThrows(JobSpecException.class, () -> load(extra)).getMessage();
    }

    @Test
    void theNewKeysParseAndDefault() throws Exception {
        JobSpec s = load("steps: 10\n");
        assertEquals(1, s.getGradAccumSteps(), "grad_accum_steps defaults to 1");
        assertFalse(s.hasEpochs());
        assertFalse(s.getGradientCheckpointing());
        assertEquals("", s.getQuantize());
        assertEquals(10, JobSpecs.totalSteps(s, 999), "steps given: the data set's size does not matter");
        assertEquals(4, JobSpecs.rowsPerUpdate(s));

        JobSpec e = load("epochs: 3\ngrad_accum_steps: 4\ngradient_checkpointing: true\nquantize: nf4\n");
        assertEquals(3, e.getEpochs());
        assertEquals(4, e.getGradAccumSteps());
        assertTrue(e.getGradientCheckpointing());
        assertEquals("nf4", e.getQuantize());
        assertEquals(16, JobSpecs.rowsPerUpdate(e), "an update is batch_size × grad_accum_steps rows");
        assertEquals(3 * 7, JobSpecs.totalSteps(e, 7), "epochs × updates per epoch");
        String yaml = JobFiles.toYaml(e);
        assertTrue(yaml.contains("epochs: 3") && yaml.contains("grad_accum_steps: 4") && yaml.contains("gradient_checkpointing: true")
                && yaml.contains("quantize: nf4") && !yaml.lines().anyMatch(l -> l.startsWith("steps:")), yaml);
    }

    @Test
    void badValuesNameTheirKey() {
        assertTrue(error("steps: 10\nepochs: 2\n").contains("'epochs'"), "both steps and epochs");
        assertTrue(error("").contains("'steps'"), "neither steps nor epochs");
        assertTrue(error("epochs: 0\n").contains("'epochs'"));
        assertTrue(error("steps: 5\ngrad_accum_steps: 0\n").contains("'grad_accum_steps'"));
        assertTrue(error("steps: 5\nquantize: int8\n").contains("'quantize'"));
        assertTrue(error("steps: 5\ngradient_checkpointing: maybe\n").contains("'gradient_checkpointing'"));
    }

    @Test
    void epochsNeedADataSetThatHoldsAnUpdate() throws Exception {
        JobSpec e = load("epochs: 2\ngrad_accum_steps: 2\nschedule: {warmup_steps: 5}\n");
        String none = assertThrows(JobSpecException.class, () -> JobSpecs.totalSteps(e, 0)).getMessage();
        assertTrue(none.contains("epochs") && none.contains("8 rows"), none);
        String warm = assertThrows(JobSpecException.class, () -> JobSpecs.totalSteps(e, 2)).getMessage();
        assertTrue(warm.contains("warmup_steps"), "warmup longer than the 4 derived steps: " + warm);
        assertEquals(6, JobSpecs.totalSteps(e, 3));
        Path f = dir.resolve("synthetic.yaml");
        String msg = assertThrows(JobSpecException.class, () -> {
            Files.writeString(f, "model: random:tiny-1m\ndata: {synthetic: {batch: 2, seq: 16, output_tokens: 4}}\nepochs: 1\noutput_dir: runs/y\n");
            JobFiles.load(f);
        }).getMessage();
        assertTrue(msg.contains("epochs"), msg);
    }
}
