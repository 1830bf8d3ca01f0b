package org.sparselora.arcagi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.io.HfCheckpointWriter;
import org.sparselora.engine.model.RandomWeights;

/** The solver on a tiny random model: test-time training learns the task's own leave-one-out data. */
class ArcSolverTest {

    @TempDir
    Path dir;

    @Test
    void testTimeTrainingLowersTheLossOnTheTasksOwnData() throws Exception {
        Path model = dir.resolve("m");
        HfCheckpointWriter.write(new RandomWeights(PretrainCommand.arc(32, 64, 2, 2, 1, 16, 512), 7), null, model, DType.F32, 0, null);
        ArcTokenizer.writeFiles(model, 512);
        // full-batch steps (6 examples, batch 6): every step sees the same data, so the loss must fall
        ArcSolver.Settings s = new ArcSolver.Settings(12, 6, 6, 8, 16, 1e-2, 1, true, 512, null, null, 1);
        try (ArcModel m = ArcModel.open(model, "cpu")) {
            ArcResults.TaskResult r = new ArcSolver(m, s, msg -> {}).solve(SolverPartsTest.TASK);
            assertEquals(6, r.tttExamples());
            assertTrue(r.finalLoss() < 0.7 * r.firstLoss(), r.firstLoss() + " -> " + r.finalLoss());
            assertEquals(1, r.attempts().size());
            assertEquals(1, r.solved().size());
            assertTrue(r.tttSeconds() > 0 && r.inferenceSeconds() > 0);
        }
    }
}
