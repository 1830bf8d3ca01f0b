package org.sparselora.bench.sparse;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The loss curves of a {@code SparseParity --curves FILE} run drawn as one SVG: training loss per
 * step, one colour per variant (dense LoRA, SparseLoRA sliced, SparseLoRA cut), each step's loss as a
 * faint line and its moving average over {@code window} steps as a bold one, so curves that track
 * each other can be told apart from the batch-to-batch noise. Hand-written SVG, written to a temp
 * file and renamed. {@code main(JSONL [SVG])} plots an existing file (e.g. one a device run brought
 * back).
 */
public final class CurvesPlot {
    private static final String[] COLOURS = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};
    private static final int W = 860, H = 500, LEFT = 70, RIGHT = 200, TOP = 40, BOTTOM = 55;

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

    static String svg(Map<String, List<double[]>> series, String title, int window) {
        double x0 = Double.POSITIVE_INFINITY, x1 = Double.NEGATIVE_INFINITY, y0 = Double.POSITIVE_INFINITY, y1 = Double.NEGATIVE_INFINITY;
        for (List<double[]> pts : series.values())
            for (double[] p : pts) {
                if (!Double.isFinite(p[1])) continue;
                x0 = Math.min(x0, p[0]); x1 = Math.max(x1, p[0]);
                y0 = Math.min(y0, p[1]); y1 = Math.max(y1, p[1]);
            }
        if (x0 == Double.POSITIVE_INFINITY) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
        if (x1 == x0) x1 = x0 + 1;
        if (y1 == y0) { y0 -= 0.5; y1 += 0.5; }
        double pw = W - LEFT - RIGHT, ph = H - TOP - BOTTOM;
        final double fx0 = x0, fx1 = x1, fy0 = y0 - 0.03 * (y1 - y0), fy1 = y1 + 0.03 * (y1 - y0);
        java.util.function.DoubleUnaryOperator sx = x -> LEFT + (x - fx0) / (fx1 - fx0) * pw;
        java.util.function.DoubleUnaryOperator sy = y -> TOP + (fy1 - y) / (fy1 - fy0) * ph;
        StringBuilder s = new StringBuilder();
        s.append(String.format(Locale.ROOT, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">%n", W, H));
        s.append(String.format(Locale.ROOT, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>%n", W, H));
        s.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"22\" font-size=\"14\">%s</text>%n", LEFT, escape(title)));
        s.append(String.format(Locale.ROOT, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#333\"/>%n", LEFT, TOP, pw, ph));
        for (int i = 0; i <= 5; i++) {
            double xv = fx0 + i * (fx1 - fx0) / 5, yv = fy0 + i * (fy1 - fy0) / 5;
            s.append(String.format(Locale.ROOT, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.0f</text>%n", sx.applyAsDouble(xv), H - BOTTOM + 18, xv));
            s.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.3f</text>%n", LEFT - 6, sy.applyAsDouble(yv) + 4, yv));
            s.append(String.format(Locale.ROOT, "<line x1=\"%d\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>%n", LEFT + 1, LEFT + pw - 1, sy.applyAsDouble(yv), sy.applyAsDouble(yv)));
        }
        s.append(String.format(Locale.ROOT, "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\">step</text>%n", LEFT + pw / 2, H - 15));
        s.append(String.format(Locale.ROOT, "<text x=\"18\" y=\"%.0f\" transform=\"rotate(-90 18 %.0f)\" text-anchor=\"middle\">training loss (nats)</text>%n", TOP + ph / 2, TOP + ph / 2));
        int ci = 0;
        for (Map.Entry<String, List<double[]>> e : series.entrySet()) {
            String colour = COLOURS[ci % COLOURS.length];
            List<double[]> pts = e.getValue();
            double[] avg = movingAverage(pts, window);
            StringBuilder raw = new StringBuilder(), smooth = new StringBuilder();
            for (int i = 0; i < pts.size(); i++) {
                double[] p = pts.get(i);
                if (!Double.isFinite(p[1])) continue;
                raw.append(String.format(Locale.ROOT, "%.1f,%.1f ", sx.applyAsDouble(p[0]), sy.applyAsDouble(p[1])));
                smooth.append(String.format(Locale.ROOT, "%.1f,%.1f ", sx.applyAsDouble(p[0]), sy.applyAsDouble(avg[i])));
            }
            s.append(String.format(Locale.ROOT, "<polyline fill=\"none\" stroke=\"%s\" stroke-opacity=\"0.25\" stroke-width=\"1\" points=\"%s\"/>%n", colour, raw.toString().trim()));
            s.append(String.format(Locale.ROOT, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2.2\" points=\"%s\"/>%n", colour, smooth.toString().trim()));
            double ly = TOP + 14 + ci * 20;
            s.append(String.format(Locale.ROOT, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" stroke-width=\"2.2\"/>%n", LEFT + pw + 12, LEFT + pw + 36, ly, ly, colour));
            s.append(String.format(Locale.ROOT, "<text x=\"%.0f\" y=\"%.0f\">%s</text>%n", LEFT + pw + 42, ly + 4, escape(e.getKey())));
            ci++;
        }
        s.append(String.format(Locale.ROOT, "<text x=\"%.0f\" y=\"%.0f\" fill=\"#666\">bold: mean of last %d steps</text>%n", LEFT + pw + 12, TOP + 14 + ci * 20 + 6.0, window));
        s.append("</svg>\n");
        return s.toString();
    }

    /** Writes the SVG for {@code jsonl} to {@code svg} (temp file + rename); returns svg. */
    public static Path write(Path jsonl, Path svg, String title, int window) throws IOException {
        Map<String, List<double[]>> series = read(jsonl);
        if (series.isEmpty()) throw new IllegalArgumentException(jsonl + ": no loss rows to plot");
        Path tmp = svg.resolveSibling(svg.getFileName() + ".tmp");
        Files.writeString(tmp, svg(series, title, window), StandardCharsets.UTF_8);
        return Files.move(tmp, svg, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    /** The SVG path that goes with a curves file: {@code x.jsonl} → {@code x.svg}. */
    public static Path svgFor(Path jsonl) {
        String n = jsonl.getFileName().toString();
        return jsonl.resolveSibling((n.endsWith(".jsonl") ? n.substring(0, n.length() - 6) : n) + ".svg");
    }

    private static String escape(String t) {
        return t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;");
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
