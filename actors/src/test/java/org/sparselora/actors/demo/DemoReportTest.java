package org.sparselora.actors.demo;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.io.FormatException;

/** The comparison is computed from metrics.jsonl rows, per phase of the SparseLoRA job, on the same step numbers of both jobs. */
class DemoReportTest {

    @TempDir Path dir;

    private static String row(int step, boolean sparse, long flops, long dense, long pred, String ms) {
        return String.format(java.util.Locale.ROOT,
                "{\"step\":%d,\"loss\":%.2f,\"lr\":0.001,\"sparse\":%b,\"flops\":%d,\"dense_flops\":%d,\"predictor_flops\":%d,\"ms\":%s,\"tokens\":100}",
                step, 1.0 / step, sparse, flops, dense, pred, ms);
    }

    @Test
    void phasesSplitWarmUpFromSparseSteps() throws IOException {
        Path d = dir.resolve("dense.jsonl"), s = dir.resolve("sparse.jsonl");
        // steps 1-2 dense in both jobs (step 1 a slow JIT step), steps 3-5 sparse in the SparseLoRA job
        Files.write(d, List.of(row(1, false, 10, 10, 0, "900"), row(2, false, 10, 10, 0, "44"), row(3, false, 10, 10, 0, "40"),
                row(4, false, 10, 10, 0, "50"), row(5, false, 10, 10, 0, "60")));
        Files.write(s, List.of(row(1, false, 10, 10, 0, "800"), row(2, false, 10, 10, 0, "40"), row(3, true, 4, 10, 1, "20"),
                row(4, true, 5, 10, 1, "30"), row(5, true, 6, 10, 1, "25")));
        DemoReport.Phase[] p = DemoReport.phases(DemoReport.readMetrics(d), d, DemoReport.readMetrics(s), s);
        DemoReport.Phase warm = p[0], sparse = p[1], all = p[2];
        assertEquals(List.of(1, 2), warm.steps());
        assertEquals(List.of(3, 4, 5), sparse.steps());
        assertEquals(List.of(1, 2, 3, 4, 5), all.steps());
        assertEquals(472, warm.denseMs(), 1e-12);            // median of two = their mean
        assertEquals(420, warm.sparseMs(), 1e-12);
        assertEquals(1.0, warm.flopReduction(), 1e-12);
        assertEquals(50, sparse.denseMs(), 1e-12);
        assertEquals(25, sparse.sparseMs(), 1e-12);
        assertEquals(2.0, sparse.speedup(), 1e-12);
        assertEquals(5e-9, sparse.sparseGflop(), 1e-18);     // mean, predictor included
        assertEquals(1e-8, sparse.sparseDenseGflop(), 1e-18);
        assertEquals(1e-8, sparse.denseGflop(), 1e-18);
        assertEquals(1e-9, sparse.predictorGflop(), 1e-18);
        assertEquals(2.0, sparse.flopReduction(), 1e-12);
        assertEquals(50, all.denseMs(), 1e-12);
        assertEquals(30, all.sparseMs(), 1e-12);

        DemoEval.Score sc = new DemoEval.Score(1, 0.01, 8);
        DemoReport.Variant dv = DemoReport.variant("dense LoRA", dir, dir.resolve("a"), DemoReport.readMetrics(d), sc);
        DemoReport.Variant sv = DemoReport.variant("SparseLoRA", dir, dir.resolve("b"), DemoReport.readMetrics(s), new DemoEval.Score(0.75, 0.02, 8));
        assertEquals(0.2, sv.finalTrainLoss(), 1e-12);
        DemoReport.Summary sum = new DemoReport.Summary(5, warm, sparse, all, new DemoEval.Score(0, 3, 8), dv, sv, dir.resolve("adapter"),
                dir.resolve("sparsity.yaml"), 1.5);
        assertEquals(sparse, sum.headline());
        String table = DemoReport.stepTable(sum);
        assertEquals(5, table.lines().count(), table);
        String sparseRow = table.lines().filter(l -> l.startsWith("sparse: 3-5 (3 steps)")).findFirst().orElseThrow(() -> new AssertionError(table));
        assertTrue(sparseRow.contains("50.0") && sparseRow.contains("25.0") && sparseRow.contains("2.00x"), sparseRow);
        assertTrue(table.lines().anyMatch(l -> l.startsWith("warm-up, dense: 1-2 (2 steps)") && l.contains("1.12x") && l.endsWith("1.00x")), table);
        assertTrue(table.lines().anyMatch(l -> l.startsWith("all: 1-5 (5 steps)")), table);
        String scores = DemoReport.scoreTable(sum);
        assertTrue(scores.contains("0.750") && scores.contains("0.0200") && scores.contains("3.0000"), scores);
        String head = DemoReport.headline(sum);
        assertTrue(head.contains("on its 3 sparse steps: 2.00x fewer FLOPs and 2.00x the speed") && head.contains("exact match 0.750 (dense LoRA 1.000)"), head);

        DemoReport.writeSummary(dir.resolve("summary.json"), sum);
        var json = new com.fasterxml.jackson.databind.ObjectMapper().readTree(dir.resolve("summary.json").toFile());
        assertEquals(2.0, json.get("speedup").asDouble(), 1e-12);
        assertEquals(2.0, json.get("flop_reduction").asDouble(), 1e-12);
        assertEquals(0.5, json.get("flop_ratio").asDouble(), 1e-12);
        assertEquals(50, json.get("dense").get("ms_per_step").asDouble(), 1e-12);
        assertEquals(25, json.get("sparse").get("ms_per_step").asDouble(), 1e-12);
        assertEquals("sparse steps", json.get("headline_phase").asText());
        assertEquals(3, json.get("phases").size());
        assertEquals(25, json.get("phases").get(1).get("sparse_ms_per_step").asDouble(), 1e-12);
        assertEquals(3, json.get("phases").get(1).get("step_numbers").size());
    }

    @Test
    void noSparseStepHasNoSparsePhaseAndMissingRowsAreAnError() throws IOException {
        Path f = dir.resolve("m.jsonl");
        Files.write(f, List.of(row(1, false, 10, 10, 0, "5"), row(2, false, 10, 10, 0, "7")));
        List<DemoReport.Step> run = DemoReport.readMetrics(f);
        DemoReport.Phase[] p = DemoReport.phases(run, f, run, f);
        assertNull(p[1]);
        assertEquals(List.of(1, 2), p[0].steps());
        FormatException missing = assertThrows(FormatException.class, () -> DemoReport.phases(run.subList(0, 1), dir.resolve("d"), run, f));
        assertTrue(missing.getMessage().contains("has 1 of the 2 steps compared"), missing.getMessage());
        Files.writeString(f, "{\"step\": 1}\n");
        FormatException e = assertThrows(FormatException.class, () -> DemoReport.readMetrics(f));
        assertTrue(e.getMessage().contains(f.toString()) && e.getMessage().contains("line 1"), e.getMessage());
        assertEquals(2.5, DemoReport.median(new double[] {4, 1, 3, 2}), 0);
        assertEquals("4-9 (6 steps)", DemoReport.stepRange(List.of(4, 5, 6, 7, 8, 9)));
        assertEquals("3 steps", DemoReport.stepRange(List.of(1, 3, 7)));
    }
}
