package org.sparselora.actors.pipeline;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Path;
import org.sparselora.engine.io.AtomicFiles;
import org.sparselora.engine.train.TrainerState;

/**
 * {@code output_dir/replicas.json}, written at a clean stop with more than one worker: data
 * parallelism must leave identical replicas, so every worker's final state is compared with worker
 * 0's — the largest |difference| over the LoRA parameters and over the AdamW moments, per worker
 * and overall (0 = bit-identical replicas; a missing tensor or a size mismatch is "inf").
 */
final class ReplicaReport {

    static final String FILE = "replicas.json";
    private static final ObjectMapper JSON = new ObjectMapper();

    private ReplicaReport() {}

    /** The report as JSON (one line). */
    static String json(int step, TrainerState[] states) {
        ObjectNode root = JSON.createObjectNode();
        ArrayNode per = JSON.createArrayNode();
        double maxParams = 0, maxMoments = 0;
        for (int w = 1; w < states.length; w++) {
            double[] d = diff(states[0], states[w]);
            maxParams = Math.max(maxParams, d[0]);
            maxMoments = Math.max(maxMoments, d[1]);
            ObjectNode n = per.addObject().put("worker", w);
            put(n, "max_abs_diff", d[0]);
            put(n, "max_abs_diff_moments", d[1]);
        }
        root.put("step", step).put("workers", states.length);
        put(root, "max_abs_diff", maxParams);
        put(root, "max_abs_diff_moments", maxMoments);
        root.set("per_worker", per);
        return root + System.lineSeparator();
    }

    /** Writes the report into {@code outputDir} (complete or not at all). */
    static void write(Path outputDir, int step, TrainerState[] states) {
        String json = json(step, states);
        AtomicFiles.writeFile(outputDir.resolve(FILE), tmp -> java.nio.file.Files.writeString(tmp, json));
    }

    /** {max |a−b| over LoRA parameters, over AdamW moments}; a missing tensor or size mismatch is +inf. */
    static double[] diff(TrainerState a, TrainerState b) {
        double params = 0, moments = 0;
        for (var e : a.tensors().entrySet()) {
            float[] x = e.getValue(), y = b.tensors().get(e.getKey());
            double d = 0;
            if (y == null || y.length != x.length) d = Double.POSITIVE_INFINITY;
            else for (int i = 0; i < x.length; i++) {
                double v = Math.abs((double) x[i] - y[i]);
                if (!(v <= d)) d = Double.isNaN(v) ? Double.POSITIVE_INFINITY : v;
            }
            if (e.getKey().endsWith(".exp_avg") || e.getKey().endsWith(".exp_avg_sq")) moments = Math.max(moments, d);
            else params = Math.max(params, d);
        }
        if (a.tensors().size() != b.tensors().size()) params = Double.POSITIVE_INFINITY;
        return new double[]{params, moments};
    }

    private static void put(ObjectNode n, String key, double v) {
        if (Double.isFinite(v)) n.put(key, v);
        else n.put(key, "inf");
    }
}
