package org.sparselora.actors.pipeline;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.LinkOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import org.sparselora.engine.io.AtomicFiles;
import org.sparselora.proto.control.StepMetrics;

/**
 * {@code <output_dir>/metrics.jsonl}: one JSON object per completed step (step, loss, lr, sparse,
 * flops, dense_flops, predictor_flops, ms, tokens). On a restart or resume from a checkpoint at
 * step S the file is first cut back to rows 1..S (rows after S will be recomputed; a torn last line
 * from a killed process goes too), so the file has every step exactly once, in order.
 */
public final class MetricsLog implements AutoCloseable {

    public static final String FILE = "metrics.jsonl";
    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path file;
    private BufferedWriter out;

    public MetricsLog(Path outputDir) {
        this.file = outputDir.resolve(FILE);
    }

    public Path file() { return file; }

    /** Keep rows with step ≤ {@code completedSteps} (stopping at the first gap or torn line), then append. */
    public void openAt(int completedSteps) throws IOException {
        close();
        Files.createDirectories(file.getParent());
        List<String> keep = new ArrayList<>();
        if (Files.isRegularFile(file, LinkOption.NOFOLLOW_LINKS)) {
            int expect = 1;
            for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
                JsonNode row;
                try {
                    row = JSON.readTree(line);
                } catch (IOException torn) {
                    break;
                }
                if (row == null || !row.has("step") || row.get("step").asInt() != expect || expect > completedSteps) break;
                keep.add(line);
                expect++;
            }
        }
        AtomicFiles.removeStaleTemps(file);
        AtomicFiles.write(file, tmp -> Files.write(tmp, keep, StandardCharsets.UTF_8));
        // the file just renamed into place: never a symlink, and appending must not follow one planted since
        out = Files.newBufferedWriter(file, StandardCharsets.UTF_8, StandardOpenOption.APPEND, LinkOption.NOFOLLOW_LINKS);
    }

    public void append(StepMetrics m) throws IOException {
        ObjectNode row = JSON.createObjectNode();
        row.put("step", m.getStep());
        row.put("loss", m.getLoss());
        row.put("lr", m.getLr());
        row.put("sparse", m.getSparse());
        row.put("flops", m.getFlops());
        row.put("dense_flops", m.getDenseFlops());
        row.put("predictor_flops", m.getPredictorFlops());
        row.put("ms", m.getMs());
        row.put("tokens", m.getTokens());
        row.put("agg_ms", m.getAggMs());
        row.put("agg_overlap", m.getAggOverlap());
        out.write(JSON.writeValueAsString(row));
        out.write('\n');
        out.flush();
    }

    @Override
    public void close() throws IOException {
        if (out != null) {
            out.close();
            out = null;
        }
    }
}
