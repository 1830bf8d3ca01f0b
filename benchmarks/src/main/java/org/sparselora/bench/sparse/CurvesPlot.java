package org.sparselora.bench.sparse;

import java.awt.BasicStroke;
import java.awt.Color;
import java.io.OutputStream;
import org.knowm.xchart.VectorGraphicsEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.Styler;
import org.knowm.xchart.style.markers.SeriesMarkers;
import org.sparselora.engine.io.AtomicFiles;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The loss curves of a {@code SparseParity --curves FILE} run drawn as one SVG: training loss per
 * step, one colour per variant (dense LoRA, SparseLoRA sliced, SparseLoRA cut), each step's loss as a
 * faint line and its moving average over {@code window} steps as a bold one, so curves that track
 * each other can be told apart from the batch-to-batch noise. Drawn with XChart; written through
 * AtomicFiles. {@code main(JSONL [SVG])} plots an existing file (e.g. one a device run brought
 * back).
 */
public final class CurvesPlot {
    private static final Color[] COLOURS = {new Color(0x1f77b4), new Color(0xd62728), new Color(0x2ca02c), new Color(0x9467bd), new Color(0xff7f0e)};

    private CurvesPlot() {}

    /** Variant name → its (step, loss) points in file order. A torn last line ends the read. */
    static Map<String, List<double[]>> read(Path jsonl) throws IOException {
        ObjectMapper json = new ObjectMapper();
        Map<String, List<double[]>> series = new LinkedHashMap<>();
        int lineNo = 0;
        for (String line : Files.readAllLines(jsonl, StandardCharsets.UTF_8)) {
            lineNo++;
            if (line.isBlank()) continue;
            JsonNode n;
            try {
                n = json.readTree(line);
            } catch (IOException torn) {
                break;
            }
            if (!n.hasNonNull("variant") || !n.hasNonNull("step") || !n.hasNonNull("loss"))
                throw new IllegalArgumentException(jsonl + ":" + lineNo + ": want {\"variant\", \"step\", \"loss\"}, got " + line);
            series.computeIfAbsent(n.get("variant").asText(), k -> new ArrayList<>())
                    .add(new double[] {n.get("step").asDouble(), n.get("loss").asDouble()});
        }
        return series;
    }

    /** Trailing moving average over the last {@code window} points. */
    static double[] movingAverage(List<double[]> pts, int window) {
        double[] out = new double[pts.size()];
        double sum = 0;
        for (int i = 0; i < pts.size(); i++) {
            sum += pts.get(i)[1];
            if (i >= window) sum -= pts.get(i - window)[1];
            out[i] = sum / Math.min(i + 1, window);
        }
        return out;
    }

    /** One raw (thin) and one smoothed (bold) line per variant, in one colour per variant. */
    static XYChart chart(Map<String, List<double[]>> series, String title, int window) {
        XYChart c = new XYChartBuilder().width(860).height(500).title(title).xAxisTitle("step").yAxisTitle("training loss (nats)").build();
        c.getStyler().setLegendPosition(Styler.LegendPosition.OutsideE);
        c.getStyler().setChartBackgroundColor(Color.WHITE);
        c.getStyler().setPlotBackgroundColor(Color.WHITE);
        int ci = 0;
        for (Map.Entry<String, List<double[]>> e : series.entrySet()) {
            Color colour = COLOURS[ci++ % COLOURS.length];
            List<double[]> pts = e.getValue();
            double[] avg = movingAverage(pts, window);
            List<Integer> keep = new ArrayList<>();
            for (int i = 0; i < pts.size(); i++) if (Double.isFinite(pts.get(i)[1])) keep.add(i);
            if (keep.isEmpty()) continue;
            double[] x = keep.stream().mapToDouble(i -> pts.get(i)[0]).toArray();
            XYSeries raw = c.addSeries(e.getKey() + " (per step)", x, keep.stream().mapToDouble(i -> pts.get(i)[1]).toArray());
            raw.setMarker(SeriesMarkers.NONE);
            raw.setLineColor(new Color(colour.getRed(), colour.getGreen(), colour.getBlue(), 70));
            raw.setLineStyle(new BasicStroke(1f));
            raw.setShowInLegend(false);
            XYSeries smooth = c.addSeries(e.getKey() + " (mean of last " + window + ")", x, keep.stream().mapToDouble(i -> avg[i]).toArray());
            smooth.setMarker(SeriesMarkers.NONE);
            smooth.setLineColor(colour);
            smooth.setLineStyle(new BasicStroke(2.2f));
        }
        return c;
    }

    /** Writes the SVG for {@code jsonl} to {@code svg} (a unique temp file, renamed into place); returns svg. */
    public static Path write(Path jsonl, Path svg, String title, int window) throws IOException {
        Map<String, List<double[]>> series = read(jsonl);
        if (series.isEmpty()) throw new IllegalArgumentException(jsonl + ": no loss rows to plot");
        XYChart chart = chart(series, title, window);
        AtomicFiles.write(svg, tmp -> {
            try (OutputStream os = Files.newOutputStream(tmp)) {
                VectorGraphicsEncoder.saveVectorGraphic(chart, os, VectorGraphicsEncoder.VectorGraphicsFormat.SVG);
            }
        });
        return svg;
    }

    /** The SVG path that goes with a curves file: {@code x.jsonl} → {@code x.svg}. */
    public static Path svgFor(Path jsonl) {
        String n = jsonl.getFileName().toString();
        return jsonl.resolveSibling((n.endsWith(".jsonl") ? n.substring(0, n.length() - 6) : n) + ".svg");
    }

    public static void main(String[] args) throws IOException {
        if (args.length < 1 || args.length > 2) {
            System.err.println("usage: CurvesPlot CURVES.jsonl [OUT.svg]");
            System.exit(2);
        }
        Path in = Path.of(args[0]), out = args.length > 1 ? Path.of(args[1]) : svgFor(in);
        System.out.println("wrote " + write(in, out, "Training loss per step: " + in.getFileName(), 10));
    }
}
