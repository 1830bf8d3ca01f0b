package org.sparselora.actors.pipeline;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.awt.BasicStroke;
import java.awt.Color;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.VectorGraphicsEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.Styler;
import org.knowm.xchart.style.markers.SeriesMarkers;
import org.sparselora.engine.io.AtomicFiles;

/**
 * {@code <output_dir>/loss.svg} and {@code loss.png}: the loss curve of a training job, drawn with
 * XChart from the rows of {@code metrics.jsonl} when the job ends (finished, cancelled or failed):
 * step on x, loss on y, dense steps and sparse steps as two series of markers over a thin line
 * through every finite loss, and a non-finite loss (a skipped NaN/inf step) as a cross at the top
 * edge, so every row has its point. Each file is written through {@link AtomicFiles} (a uniquely
 * named temp file, renamed into place).
 */
public final class LossPlot {

    public static final String FILE = "loss.svg", PNG = "loss.png";
    static final String DENSE = "dense step", SPARSE = "sparse step", NONFINITE = "non-finite loss", CURVE = "loss";
    // RGB values, not java.awt.Color constants: a runtime without java.desktop must still load this class
    static final int DENSE_COLOUR = 0x1f77b4, SPARSE_COLOUR = 0xd62728, NONFINITE_COLOUR = 0x7f7f7f;
    private static final ObjectMapper JSON = com.fasterxml.jackson.databind.json.JsonMapper.builder()
            .enable(com.fasterxml.jackson.core.json.JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS).build();   // a bare NaN, should a writer emit one

    /** One metrics row: what the plot needs of it. */
    public record Row(int step, double loss, boolean sparse) {}

    private LossPlot() {}

    /**
     * Reads {@code outputDir/metrics.jsonl} and writes {@code outputDir/loss.svg} (and
     * {@code loss.png}); returns the SVG's path, or null when there is no metrics file or it has no
     * rows (nothing to draw).
     */
    public static Path write(Path outputDir, String title) throws IOException {
        Path metrics = outputDir.resolve(MetricsLog.FILE);
        if (!Files.isRegularFile(metrics, java.nio.file.LinkOption.NOFOLLOW_LINKS)) return null;
        List<Row> rows = read(metrics);
        if (rows.isEmpty()) return null;
        try {
            return render(rows, title, outputDir);
        } catch (LinkageError | java.awt.AWTError | RuntimeException e) {
            // a Java runtime without java.desktop or fonts: the job's numbers stand, only the picture is missing
            System.err.println("loss plot not written (" + e + "); the metrics are in " + metrics);
            return null;
        }
    }

    private static Path render(List<Row> rows, String title, Path outputDir) throws IOException {
        XYChart chart = chart(rows, title);
        Path svg = outputDir.resolve(FILE), png = outputDir.resolve(PNG);
        AtomicFiles.removeStaleTemps(svg);
        AtomicFiles.removeStaleTemps(png);
        AtomicFiles.write(svg, tmp -> {
            try (OutputStream os = Files.newOutputStream(tmp)) {
                VectorGraphicsEncoder.saveVectorGraphic(chart, os, VectorGraphicsEncoder.VectorGraphicsFormat.SVG);
            }
        });
        AtomicFiles.write(png, tmp -> {
            try (OutputStream os = Files.newOutputStream(tmp)) {
                BitmapEncoder.saveBitmap(chart, os, BitmapEncoder.BitmapFormat.PNG);
            }
        });
        return svg;
    }

    /** The rows of a metrics file; a torn or foreign line (a killed writer) ends the read. */
    static List<Row> read(Path metrics) throws IOException {
        List<Row> rows = new ArrayList<>();
        for (String line : Files.readAllLines(metrics, StandardCharsets.UTF_8)) {
            if (line.isBlank()) continue;
            JsonNode n;
            try {
                n = JSON.readTree(line);
            } catch (IOException torn) {
                break;
            }
            if (n == null || !n.has("step") || !n.has("loss")) break;
            JsonNode l = n.get("loss");
            // Jackson writes NaN/Infinity as strings or bare tokens; either way it is not a finite number
            double loss = l.isNumber() ? l.asDouble() : Double.NaN;
            rows.add(new Row(n.get("step").asInt(), loss, n.path("sparse").asBoolean(false)));
        }
        return rows;
    }

    /** The chart of these rows: a line through the finite losses, markers per kind of step. */
    static XYChart chart(List<Row> rows, String title) {
        XYChart c = new XYChartBuilder().width(800).height(480)
                .title(title == null || title.isEmpty() ? "training loss" : title + " — training loss")
                .xAxisTitle("step").yAxisTitle("loss (nats)").build();
        Styler st = c.getStyler();
        st.setLegendPosition(Styler.LegendPosition.InsideNE);
        st.setChartBackgroundColor(Color.WHITE);
        st.setPlotBackgroundColor(Color.WHITE);
        c.getStyler().setMarkerSize(rows.size() > 400 ? 3 : 5);
        double hi = rows.stream().mapToDouble(Row::loss).filter(Double::isFinite).max().orElse(1);
        List<Row> finite = rows.stream().filter(r -> Double.isFinite(r.loss())).toList();
        if (!finite.isEmpty()) {
            XYSeries line = c.addSeries(CURVE, finite.stream().mapToDouble(Row::step).toArray(), finite.stream().mapToDouble(Row::loss).toArray());
            line.setMarker(SeriesMarkers.NONE);
            line.setLineColor(new Color(0x999999));
            line.setLineStyle(new BasicStroke(1f));
            line.setShowInLegend(false);
        }
        points(c, DENSE, finite.stream().filter(r -> !r.sparse()).toList(), DENSE_COLOUR, false, hi);
        points(c, SPARSE, finite.stream().filter(Row::sparse).toList(), SPARSE_COLOUR, false, hi);
        points(c, NONFINITE, rows.stream().filter(r -> !Double.isFinite(r.loss())).toList(), NONFINITE_COLOUR, true, hi);
        return c;
    }

    private static void points(XYChart c, String name, List<Row> rows, int colour, boolean atTop, double top) {
        if (rows.isEmpty()) return;
        XYSeries s = c.addSeries(name, rows.stream().mapToDouble(Row::step).toArray(),
                rows.stream().mapToDouble(r -> atTop ? top : r.loss()).toArray());
        s.setXYSeriesRenderStyle(XYSeries.XYSeriesRenderStyle.Scatter);
        s.setMarker(atTop ? SeriesMarkers.CROSS : SeriesMarkers.CIRCLE);
        s.setMarkerColor(new Color(colour));
    }
}
