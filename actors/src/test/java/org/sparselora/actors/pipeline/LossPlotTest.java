package org.sparselora.actors.pipeline;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import javax.imageio.ImageIO;
import javax.xml.parsers.DocumentBuilderFactory;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYSeries;
import org.sparselora.actors.cli.CliRunner;

/** loss.svg / loss.png: one point per metrics row, dense, sparse and non-finite apart; written when a train job ends. */
class LossPlotTest {

    @TempDir
    Path dir;

    static void assertWellFormedSvg(Path svg) throws Exception {
        DocumentBuilderFactory f = DocumentBuilderFactory.newInstance();
        f.setNamespaceAware(true);
        f.setFeature("http://apache.org/xml/features/nonvalidating/load-external-dtd", false);   // the SVG 1.1 DOCTYPE: never fetched
        assertEquals("svg", f.newDocumentBuilder().parse(svg.toFile()).getDocumentElement().getLocalName());
    }

    static double[] xs(XYChart c, String series) {
        XYSeries s = c.getSeriesMap().get(series);
        return s == null ? new double[0] : s.getXData();
    }

    @Test
    void onePointPerRowInThreeSeries() throws Exception {
        List<String> rows = new ArrayList<>();
        for (int s = 1; s <= 37; s++) {
            String loss = s == 20 ? "\"NaN\"" : Double.toString(4.0 * Math.exp(-s / 15.0) + 0.5);
            rows.add("{\"step\":" + s + ",\"loss\":" + loss + ",\"lr\":1.0E-3,\"sparse\":" + (s > 9) + ",\"flops\":10,\"dense_flops\":20,"
                    + "\"predictor_flops\":1,\"ms\":3.5,\"tokens\":64}");
        }
        Files.write(dir.resolve(MetricsLog.FILE), rows);
        XYChart c = LossPlot.chart(LossPlot.read(dir.resolve(MetricsLog.FILE)), "job");
        assertEquals(9, xs(c, LossPlot.DENSE).length);
        assertEquals(27, xs(c, LossPlot.SPARSE).length);
        assertArrayEquals(new double[] {20}, xs(c, LossPlot.NONFINITE));
        assertEquals(36, xs(c, LossPlot.CURVE).length);
        assertEquals("job — training loss", c.getTitle());

        Path svg = LossPlot.write(dir, "job <a&b>");
        assertEquals(dir.resolve("loss.svg"), svg);
        assertWellFormedSvg(svg);
        // a title with markup characters still gives a well-formed document
        var png = ImageIO.read(dir.resolve(LossPlot.PNG).toFile());
        assertEquals(800, png.getWidth());
        try (var s = Files.list(dir)) {
            assertEquals(List.of("loss.png", "loss.svg", "metrics.jsonl"), s.map(p -> p.getFileName().toString()).sorted().toList(), "no temp files left");
        }
    }

    @Test
    void noMetricsNoPlot() throws Exception {
        assertNull(LossPlot.write(dir, "x"));
        Files.writeString(dir.resolve(MetricsLog.FILE), "");
        assertNull(LossPlot.write(dir, "x"));
        assertFalse(Files.exists(dir.resolve(LossPlot.FILE)));
    }

    @Test
    void aTrainingJobEndsWithItsLossPlot() throws Exception {
        Path job = CliRunner.jobFile(dir, "plot", 6, 1, 0, 0);
        CliRunner.Result r = CliRunner.run("train", "--config", job.toString());
        assertEquals(0, r.code(), r.err());
        Path out = dir.resolve("out-plot");
        long rows = Files.readAllLines(out.resolve(MetricsLog.FILE)).stream().filter(l -> !l.isBlank()).count();
        assertEquals(6, rows);
        assertWellFormedSvg(out.resolve(LossPlot.FILE));
        XYChart c = LossPlot.chart(LossPlot.read(out.resolve(MetricsLog.FILE)), "plot");
        // sparse from step ⌈0.25·6⌉ + 1: both kinds appear, one point per row
        assertTrue(xs(c, LossPlot.DENSE).length > 0 && xs(c, LossPlot.SPARSE).length > 0);
        assertEquals(rows, xs(c, LossPlot.DENSE).length + xs(c, LossPlot.SPARSE).length + xs(c, LossPlot.NONFINITE).length);
        assertTrue(Files.isRegularFile(out.resolve(LossPlot.PNG)));
    }
}
