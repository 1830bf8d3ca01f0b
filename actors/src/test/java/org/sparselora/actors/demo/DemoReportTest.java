package org.sparselora.actors.demo;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.io.FormatException;

/** The comparison is computed from metrics.jsonl rows: medians and means over the sparse phase only. */
class DemoReportTest {

    @TempDir Path dir;

    private static String row(int step, boolean sparse, long flops, long dense, long pred, String ms) {
        return String.format(java.util.Locale.ROOT,
                "{\"step\":%d,\"loss\":%.2f,\"lr\":0.001,\"sparse\":%b,\"flops\":%d,\"dense_flops\":%d,\"predictor_flops\":%d,\"ms\":%s,\"tokens\":100}",
                step, 1.0 / step, sparse, flops, dense, pred, ms);
    }

    @Test
    void mediansAndMeansOverTheSparsePhase() throws IOException {
        Path d = dir.resolve("dense"), s = dir.resolve("sparse");
        Files.createDirectories(d);
        Files.createDirectories(s);
        // dense run: step 1 is a slow JIT warm-up step that must not count
        Files.write(d.resolve("metrics.jsonl"), List.of(row(1, false, 10, 10, 0, "900"), row(2, false, 10, 10, 0, "40"),
                row(3, false, 10, 10, 0, "50"), row(4, false, 10, 10, 0, "60")));
        Files.write(s.resolve("metrics.jsonl"), List.of(row(1, false, 10, 10, 0, "800"), row(2, true, 6, 10, 1, "20"),
                row(3, true, 8, 10, 1, "30"), row(4, true, 7, 10, 1, "25")));
        List<DemoReport.Step> dr = DemoReport.readMetrics(d.resolve("metrics.jsonl")), sr = DemoReport.readMetrics(s.resolve("metrics.jsonl"));
        List<Integer> phase = DemoReport.phase(sr);
        assertEquals(List.of(2, 3, 4), phase);
        DemoEval.Score sc = new DemoEval.Score(1, 0.01, 8);
        DemoReport.Variant dv = DemoReport.variant("dense LoRA", d, d.resolve("adapter"), dr, phase, sc);
        DemoReport.Variant sv = DemoReport.variant("SparseLoRA", s, s.resolve("adapter"), sr, phase, sc);
        assertEquals(50, dv.msPerStep(), 1e-12);
        assertEquals(25, sv.msPerStep(), 1e-12);
        assertEquals(7e-9, sv.gflopPerStep(), 1e-18);
        assertEquals(1e-8, sv.denseGflopPerStep(), 1e-18);
        assertEquals(1e-9, sv.predictorGflopPerStep(), 1e-18);
        assertEquals(0.25, sv.finalTrainLoss(), 1e-12);
        DemoReport.Summary sum = new DemoReport.Summary(4, phase, true, new DemoEval.Score(0, 3, 8), dv, sv, dir.resolve("adapter"),
                dir.resolve("sparsity.yaml"), 1.5);
        assertEquals(2.0, sum.speedup(), 1e-12);
        assertEquals(0.7, sum.flopRatio(), 1e-12);
        String table = DemoReport.table(sum);
        assertTrue(table.contains("2.00x") && table.contains("25.0") && table.contains("50.0") && table.contains("(0.70x)"), table);
        assertEquals(5, table.lines().count(), table);
        DemoReport.writeSummary(dir.resolve("summary.json"), sum);
        var json = new com.fasterxml.jackson.databind.ObjectMapper().readTree(dir.resolve("summary.json").toFile());
        assertEquals(2.0, json.get("speedup").asDouble(), 1e-12);
        assertEquals(25, json.get("sparse").get("ms_per_step").asDouble(), 1e-12);
        assertEquals(3, json.get("compared_step_numbers").size());
    }

    @Test
    void noSparseStepComparesAllStepsAndMissingRowsAreAnError() throws IOException {
        Path f = dir.resolve("m.jsonl");
        Files.write(f, List.of(row(1, false, 10, 10, 0, "5"), row(2, false, 10, 10, 0, "7")));
        List<DemoReport.Step> run = DemoReport.readMetrics(f);
        assertEquals(List.of(1, 2), DemoReport.phase(run));
        assertThrows(FormatException.class, () -> DemoReport.variant("x", dir, dir, run.subList(0, 1), List.of(1, 2), new DemoEval.Score(0, 0, 1)));
        Files.writeString(f, "{\"step\": 1}\n");
        FormatException e = assertThrows(FormatException.class, () -> DemoReport.readMetrics(f));
        assertTrue(e.getMessage().contains(f.toString()) && e.getMessage().contains("line 1"), e.getMessage());
        assertEquals(2.5, DemoReport.median(new double[] {4, 1, 3, 2}), 0);
    }
}
