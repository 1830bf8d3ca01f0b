package org.sparselora.actors.pipeline;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.StepResult;
import org.sparselora.engine.train.TrainerState;

/** The small types the JobSupervisor delegates to: the batch split, the step row, the replica report. */
class SupervisorPartsTest {

    @TempDir
    Path tmp;

    @Test
    void theBatchSplitsIntoRowBlocksInWorkerOrder() {
        int rows = 4, t = 3;
        int[] tokens = new int[rows * t], targets = new int[rows * t], positions = new int[rows * t];
        for (int i = 0; i < tokens.length; i++) {
            tokens[i] = i;
            targets[i] = 100 + i;
            positions[i] = i % t;
        }
        Batch b = new Batch(rows, t, tokens, targets, positions, new int[]{0, 1, 2, 0});
        Batch[] s = BatchShards.split(b, 2);
        assertEquals(2, s[1].batch());
        assertArrayEquals(new int[]{6, 7, 8, 9, 10, 11}, s[1].tokens());
        assertArrayEquals(new int[]{106, 107, 108, 109, 110, 111}, s[1].targets());
        assertArrayEquals(new int[]{2, 0}, s[1].keyStart());
        assertEquals(b, BatchShards.split(b, 1)[0]);
        assertThrows(IllegalStateException.class, () -> BatchShards.split(b, 3));
    }

    @Test
    void theStepRowSumsTheWorkersShards() {
        JobSupervisor.StepApplied a = new JobSupervisor.StepApplied(0, 4, 0, 0.01,
                new StepResult(6.0, 3, 10, true, 100, 300, 5, 1.0), false, null);
        JobSupervisor.StepApplied b = new JobSupervisor.StepApplied(0, 4, 1, 0.01,
                new StepResult(2.0, 1, 10, false, 120, 300, 5, 1.0), true, null);
        StepStats s = StepStats.of(4, 10, new JobSupervisor.StepApplied[]{a, b}, 12.5);
        assertEquals(5, s.row().getStep(), "1-based in the row");
        assertEquals(2.0, s.row().getLoss(), 1e-12, "(6 + 2) / (3 + 1) output tokens");
        assertEquals(20, s.row().getTokens());
        assertEquals(220, s.row().getFlops());
        assertEquals(600, s.row().getDenseFlops());
        assertTrue(s.row().getSparse());
        assertTrue(s.skipped(), "one worker skipped its update");
        assertEquals(12.5, s.row().getMs());
    }

    @Test
    void theReplicaReportNamesTheLargestDifferencePerWorker() throws Exception {
        TrainerState w0 = state(1f, 2f, 0.5f);
        TrainerState w1 = state(1f, 2.25f, 0.5f);
        TrainerState w2 = new TrainerState(3, new LinkedHashMap<>(java.util.Map.of("a.lora_A", new float[]{1f})));
        ReplicaReport.write(tmp, 3, new TrainerState[]{w0, w1, w2});
        JsonNode r = new ObjectMapper().readTree(tmp.resolve(JobSupervisor.REPLICAS_FILE).toFile());
        assertEquals(3, r.get("step").asInt());
        assertEquals(3, r.get("workers").asInt());
        assertEquals(0.25, r.get("per_worker").get(0).get("max_abs_diff").asDouble());
        assertEquals(0.0, r.get("per_worker").get(0).get("max_abs_diff_moments").asDouble());
        assertEquals("inf", r.get("per_worker").get(1).get("max_abs_diff").asText(), "a replica missing tensors");
        assertEquals("inf", r.get("max_abs_diff").asText());
        try (var files = Files.list(tmp)) {
            assertEquals(1, files.count(), "no temp file left");
        }
    }

    static TrainerState state(float a, float b, float m) {
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        t.put("a.lora_A", new float[]{a, b});
        t.put("a.lora_A.exp_avg", new float[]{m});
        return new TrainerState(3, t);
    }
}
