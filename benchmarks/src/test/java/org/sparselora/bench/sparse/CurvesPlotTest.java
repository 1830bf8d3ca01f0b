package org.sparselora.bench.sparse;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The loss-curve plot of SparseParity runs: reading, smoothing, one series per variant, bad rows named. */
class CurvesPlotTest {
    @TempDir Path dir;

    @Test
    void twoLinesPerVariant() throws Exception {
        Path jsonl = dir.resolve("curves.jsonl");
        StringBuilder sb = new StringBuilder();
        for (String v : new String[] {"dense LoRA", "SparseLoRA sliced", "SparseLoRA <cut>"})
            for (int s = 0; s < 30; s++)
                sb.append(String.format(java.util.Locale.ROOT, "{\"variant\":\"%s\",\"step\":%d,\"loss\":%.4f,\"sparse\":false,\"ms\":1.0}%n", v, s, 4.0 - 0.05 * s));
        Files.writeString(jsonl, sb + "{\"variant\":\"dense"); // a torn last line (killed writer) ends the read
        Path svg = CurvesPlot.write(jsonl, CurvesPlot.svgFor(jsonl), "t", 10);
        assertEquals(dir.resolve("curves.svg"), svg);
        assertTrue(Files.readString(svg).contains("<svg"));
        try (var l = Files.list(dir)) {
            assertEquals(List.of("curves.jsonl", "curves.svg"), l.map(p -> p.getFileName().toString()).sorted().toList(), "no temp files left");
        }
        Map<String, List<double[]>> read = CurvesPlot.read(jsonl);
        var chart = CurvesPlot.chart(read, "t", 10);
        assertEquals(6, chart.getSeriesMap().size(), "raw + smoothed line per variant");
        assertEquals(30, chart.getSeriesMap().get("SparseLoRA <cut> (mean of last 10)").getXData().length);
        assertEquals(3, read.size());
        assertEquals(30, read.get("dense LoRA").size());
    }

    @Test
    void movingAverageIsTrailing() {
        double[] avg = CurvesPlot.movingAverage(List.of(new double[] {0, 1}, new double[] {1, 3}, new double[] {2, 5}, new double[] {3, 7}), 2);
        assertArrayEquals(new double[] {1, 2, 4, 6}, avg, 1e-12);
    }

    @Test
    void rowWithoutLossIsNamed() throws Exception {
        Path jsonl = dir.resolve("bad.jsonl");
        Files.writeString(jsonl, "{\"variant\":\"a\",\"step\":0,\"loss\":1}\n{\"variant\":\"a\",\"step\":1}\n");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> CurvesPlot.read(jsonl));
        assertTrue(e.getMessage().contains("bad.jsonl:2"), e.getMessage());
    }
}
