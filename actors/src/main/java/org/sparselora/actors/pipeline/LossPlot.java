package org.sparselora.actors.pipeline;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * {@code <output_dir>/loss.svg}: the loss curve of a training job, drawn from the rows of
 * {@code metrics.jsonl} when the job ends (finished, cancelled or failed). Hand-written SVG: axes
 * with ticks, step on x, loss on y, one marker per row — dense steps and sparse steps in two
 * colours — joined by a thin line, and a legend. A non-finite loss (a skipped NaN/inf step) gets a
 * cross at the top edge, so every row has its point. Written to a temp file and renamed.
 */
public final class LossPlot {

    public static final String FILE = "loss.svg";
    static final String DENSE_COLOUR = "#1f77b4", SPARSE_COLOUR = "#d62728", NONFINITE_COLOUR = "#7f7f7f";
    private static final ObjectMapper JSON = com.fasterxml.jackson.databind.json.JsonMapper.builder()
            .enable(com.fasterxml.jackson.core.json.JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS).build();   // a bare NaN, should a writer emit one
    private static final int W = 800, H = 480, LEFT = 70, RIGHT = 20, TOP = 40, BOTTOM = 55;

    /** One metrics row: what the plot needs of it. */
    public record Row(int step, double loss, boolean sparse) {}

    private LossPlot() {}

    /**
     * Reads {@code outputDir/metrics.jsonl} and writes {@code outputDir/loss.svg}; returns the
     * plot's path, or null when there is no metrics file or it has no rows (nothing to draw).
     */
    public static Path write(Path outputDir, String title) throws IOException {
        Path metrics = outputDir.resolve(MetricsLog.FILE);
        if (!Files.isRegularFile(metrics)) return null;
        List<Row> rows = read(metrics);
        if (rows.isEmpty()) return null;
        Path file = outputDir.resolve(FILE);
        String svg = svg(rows, title);
        try {
            org.sparselora.engine.io.AtomicFiles.writeFile(file, tmp -> Files.writeString(tmp, svg, StandardCharsets.UTF_8));
        } catch (java.io.UncheckedIOException e) {
            throw e.getCause();
        }
        return file;
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

    /** The SVG document for these rows. */
    static String svg(List<Row> rows, String title) {
        int minStep = rows.stream().mapToInt(Row::step).min().orElse(0), maxStep = rows.stream().mapToInt(Row::step).max().orElse(1);
        double lo = Double.POSITIVE_INFINITY, hi = Double.NEGATIVE_INFINITY;
        for (Row r : rows)
            if (Double.isFinite(r.loss())) { lo = Math.min(lo, r.loss()); hi = Math.max(hi, r.loss()); }
        if (lo == Double.POSITIVE_INFINITY) { lo = 0; hi = 1; }
        if (hi == lo) { lo -= Math.max(1e-3, Math.abs(lo) * 0.05); hi += Math.max(1e-3, Math.abs(hi) * 0.05); }
        if (maxStep == minStep) maxStep = minStep + 1;
        // a margin of 3% around the data, so no marker sits on the frame
        double padX = 0.03 * (maxStep - minStep), padY = 0.03 * (hi - lo);
        Axis x = Axis.of(minStep - padX, maxStep + padX, true);
        Axis y = Axis.of(lo - padY, hi + padY, false);
        double pw = W - LEFT - RIGHT, ph = H - TOP - BOTTOM;

        StringBuilder s = new StringBuilder();
        s.append("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        s.append(f("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">%n", W, H, W, H));
        s.append(f("<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>%n", W, H));
        s.append(f("<text x=\"%d\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">%s</text>%n", W / 2, escape(title == null || title.isEmpty() ? "training loss" : title + " — training loss")));
        // grid and ticks
        s.append("<g class=\"x-axis\" stroke=\"#000\" stroke-width=\"1\">\n");
        for (double t : x.ticks) {
            double px = LEFT + (t - x.min) / (x.max - x.min) * pw;
            s.append(f("<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e0e0e0\"/>%n", px, TOP, px, H - BOTTOM));
            s.append(f("<line class=\"tick\" x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>%n", px, H - BOTTOM, px, H - BOTTOM + 5));
            s.append(f("<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" stroke=\"none\">%s</text>%n", px, H - BOTTOM + 19, x.label(t)));
        }
        s.append("</g>\n<g class=\"y-axis\" stroke=\"#000\" stroke-width=\"1\">\n");
        for (double t : y.ticks) {
            double py = TOP + ph - (t - y.min) / (y.max - y.min) * ph;
            s.append(f("<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>%n", LEFT, py, W - RIGHT, py));
            s.append(f("<line class=\"tick\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>%n", LEFT - 5, py, LEFT, py));
            s.append(f("<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" stroke=\"none\">%s</text>%n", LEFT - 8, py + 4, y.label(t)));
        }
        s.append("</g>\n");
        s.append(f("<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#000\"/>%n", LEFT, TOP, pw, ph));
        s.append(f("<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">step</text>%n", LEFT + pw / 2, H - 12));
        s.append(f("<text x=\"16\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.1f)\">loss (nats)</text>%n", TOP + ph / 2, TOP + ph / 2));

        // the curve, then one marker per row
        StringBuilder line = new StringBuilder();
        StringBuilder points = new StringBuilder();
        boolean anyDense = false, anySparse = false, anyBad = false;
        for (Row r : rows) {
            double px = LEFT + (r.step() - x.min) / (x.max - x.min) * pw;
            if (!Double.isFinite(r.loss())) {
                anyBad = true;
                points.append(f("<path class=\"point nonfinite\" data-step=\"%d\" d=\"M%.1f %.1f l6 6 m-6 0 l6 -6\" stroke=\"%s\" stroke-width=\"1.5\" fill=\"none\"/>%n",
                        r.step(), px - 3, TOP - 3.0, NONFINITE_COLOUR));
                continue;
            }
            double py = TOP + ph - (r.loss() - y.min) / (y.max - y.min) * ph;
            line.append(f("%.1f,%.1f ", px, py));
            if (r.sparse()) anySparse = true; else anyDense = true;
            points.append(f("<circle class=\"point %s\" data-step=\"%d\" data-loss=\"%s\" cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\"/>%n",
                    r.sparse() ? "sparse" : "dense", r.step(), Double.toString(r.loss()), px, py, rows.size() > 400 ? 1.5 : 2.5,
                    r.sparse() ? SPARSE_COLOUR : DENSE_COLOUR));
        }
        if (!line.isEmpty())
            s.append(f("<polyline class=\"curve\" points=\"%s\" fill=\"none\" stroke=\"#999\" stroke-width=\"1\"/>%n", line.toString().trim()));
        s.append("<g class=\"points\">\n").append(points).append("</g>\n");

        // legend (top right, inside the plot)
        s.append("<g class=\"legend\">\n");
        int ly = TOP + 14, lx = W - RIGHT - 150;
        s.append(f("<rect x=\"%d\" y=\"%d\" width=\"140\" height=\"%d\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#999\"/>%n", lx - 6, TOP + 4, anyBad ? 62 : 44));
        s.append(f("<circle cx=\"%d\" cy=\"%d\" r=\"4\" fill=\"%s\"/><text x=\"%d\" y=\"%d\">dense step%s</text>%n", lx + 4, ly, DENSE_COLOUR, lx + 14, ly + 4, anyDense ? "" : " (none)"));
        ly += 18;
        s.append(f("<circle cx=\"%d\" cy=\"%d\" r=\"4\" fill=\"%s\"/><text x=\"%d\" y=\"%d\">sparse step%s</text>%n", lx + 4, ly, SPARSE_COLOUR, lx + 14, ly + 4, anySparse ? "" : " (none)"));
        if (anyBad) {
            ly += 18;
            s.append(f("<path d=\"M%d %d l6 6 m-6 0 l6 -6\" stroke=\"%s\" stroke-width=\"1.5\"/><text x=\"%d\" y=\"%d\">non-finite loss</text>%n", lx + 1, ly - 3, NONFINITE_COLOUR, lx + 14, ly + 4));
        }
        s.append("</g>\n</svg>\n");
        return s.toString();
    }

    /** A linear axis with "nice" tick values (1, 2, 2.5 or 5 × 10^k apart) covering [min, max]. */
    private record Axis(double min, double max, double[] ticks, double step, boolean integer) {
        static Axis of(double lo, double hi, boolean integer) {
            double step = nice((hi - lo) / 6);
            if (integer) step = Math.max(1, Math.round(step));
            double first = Math.ceil(lo / step - 1e-9) * step;
            List<Double> t = new ArrayList<>();
            for (double v = first; v <= hi + step * 1e-9; v += step) t.add(v);
            double[] ticks = t.stream().mapToDouble(Double::doubleValue).toArray();
            return new Axis(lo, hi, ticks, step, integer);
        }

        private static double nice(double raw) {
            double mag = Math.pow(10, Math.floor(Math.log10(raw)));
            double f = raw / mag;
            return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
        }

        String label(double v) {
            if (integer) return Long.toString(Math.round(v));
            int decimals = Math.max(0, (int) -Math.floor(Math.log10(step) - 1e-9) + (step / Math.pow(10, Math.floor(Math.log10(step))) == 2.5 ? 1 : 0));
            return String.format(Locale.ROOT, "%." + Math.min(decimals, 8) + "f", v);
        }
    }

    private static String f(String fmt, Object... args) { return String.format(Locale.ROOT, fmt, args); }

    private static String escape(String s) {
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\"", "&quot;");
    }
}
