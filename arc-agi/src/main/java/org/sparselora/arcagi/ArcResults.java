package org.sparselora.arcagi;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Path;
import java.util.List;
import org.sparselora.engine.io.AtomicFiles;

/**
 * What {@code arc solve} hands in and how it is scored, as ARC Prize does it.
 *
 * <p>{@code submission.json}: {@code {task_id: [{"attempt_1": grid, "attempt_2": grid}, …]}}, one
 * entry per test input in the task file's order; a test without an answer grid (nothing valid was
 * generated, or the task did not fit) gets the placeholder {@code [[0]]}, so every task and test is
 * present. Scoring: a test output is solved when either attempt equals it exactly; a task scores the
 * fraction of its test outputs solved; the total is the mean over tasks. A task that could not be
 * run (e.g. its prompt does not fit the model) scores 0 and says why.
 *
 * <p>{@code results.json}: per task the solved flags, the score, TTT and inference seconds, the first
 * and final TTT loss and any error; then the totals.
 */
public final class ArcResults {

    private ArcResults() {}

    static final int[][] PLACEHOLDER = {{0}};

    /**
     * @param attempts   per test input: {attempt_1, attempt_2}, either null when there is none
     * @param solved     per test input: solved, or null when the task file has no answer for it
     * @param firstLoss  the first TTT step's loss; NaN without TTT
     * @param finalLoss  the last TTT step's loss; NaN without TTT
     * @param error      why the task was not run (scored 0), or null
     */
    public record TaskResult(String id, List<int[][][]> attempts, List<Boolean> solved, double tttSeconds, double inferenceSeconds,
                             double firstLoss, double finalLoss, int tttExamples, String error) {
        /** Fraction of test outputs solved; 0 for a failed task; NaN when no test has an answer. */
        public double score() {
            if (error != null) return 0;
            int known = 0, hit = 0;
            for (Boolean b : solved)
                if (b != null) {
                    known++;
                    if (b) hit++;
                }
            return known == 0 ? Double.NaN : (double) hit / known;
        }
    }

    /** Whether either attempt equals the expected grid (false when there is nothing to compare). */
    public static boolean solved(int[][][] attempts, int[][] expected) {
        if (expected == null) return false;
        for (int[][] a : attempts) if (a != null && java.util.Arrays.deepEquals(a, expected)) return true;
        return false;
    }

    /** Mean task score over the tasks that have answers. */
    public static double total(List<TaskResult> results) {
        double sum = 0;
        int n = 0;
        for (TaskResult r : results) {
            double s = r.score();
            if (Double.isNaN(s)) continue;
            sum += s;
            n++;
        }
        return n == 0 ? Double.NaN : sum / n;
    }

    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    public static String submissionJson(List<TaskResult> results) throws java.io.IOException {
        ObjectNode root = JSON.createObjectNode();
        for (TaskResult r : results) {
            ArrayNode tests = root.putArray(r.id());
            for (int[][][] a : r.attempts()) {
                ObjectNode e = tests.addObject();
                e.set("attempt_1", JSON.valueToTree(a[0] == null ? PLACEHOLDER : a[0]));
                e.set("attempt_2", JSON.valueToTree(a[1] == null ? PLACEHOLDER : a[1]));
            }
        }
        return JSON.writeValueAsString(root) + "\n";
    }

    public static String resultsJson(List<TaskResult> results) throws java.io.IOException {
        ObjectNode root = JSON.createObjectNode();
        ObjectNode tasks = root.putObject("tasks");
        int tests = 0, solvedTests = 0;
        for (TaskResult r : results) {
            ObjectNode t = tasks.putObject(r.id());
            ArrayNode s = t.putArray("solved");
            for (Boolean b : r.solved()) {
                if (b == null) s.addNull();
                else {
                    s.add(b && r.error() == null);
                    tests++;
                    if (b && r.error() == null) solvedTests++;
                }
            }
            putNumber(t, "score", r.score());
            t.put("ttt_seconds", r.tttSeconds());
            t.put("inference_seconds", r.inferenceSeconds());
            putNumber(t, "first_loss", r.firstLoss());
            putNumber(t, "final_loss", r.finalLoss());
            t.put("ttt_examples", r.tttExamples());
            if (r.error() != null) t.put("error", r.error());
        }
        root.put("task_count", results.size());
        root.put("tests", tests);
        root.put("solved_tests", solvedTests);
        putNumber(root, "score", total(results));
        return JSON.writeValueAsString(root) + "\n";
    }

    private static void putNumber(ObjectNode n, String key, double v) {
        if (Double.isNaN(v)) n.putNull(key);
        else n.put(key, v);
    }

    /** Writes {@code submission.json} and {@code results.json} into {@code dir}, each atomically. */
    public static void write(Path dir, List<TaskResult> results) throws java.io.IOException {
        String sub = submissionJson(results), res = resultsJson(results);
        AtomicFiles.writeFile(dir.resolve("submission.json"), tmp -> java.nio.file.Files.writeString(tmp, sub));
        AtomicFiles.writeFile(dir.resolve("results.json"), tmp -> java.nio.file.Files.writeString(tmp, res));
    }

    /** A fixed-width table: one row per task, then the total. */
    public static String table(List<TaskResult> results) {
        StringBuilder sb = new StringBuilder(String.format("%-10s %-9s %7s %8s %8s %9s  %s%n", "task", "solved", "score", "ttt s", "infer s", "ttt loss", "note"));
        for (TaskResult r : results) {
            StringBuilder marks = new StringBuilder();
            for (Boolean b : r.solved()) marks.append(b == null ? '?' : b && r.error() == null ? 'Y' : '.');
            double s = r.score();
            sb.append(String.format("%-10s %-9s %7s %8.1f %8.1f %9s  %s%n", r.id(), marks, Double.isNaN(s) ? "-" : String.format("%.3f", s),
                    r.tttSeconds(), r.inferenceSeconds(), Double.isNaN(r.finalLoss()) ? "-" : String.format("%.4f", r.finalLoss()),
                    r.error() == null ? "" : r.error()));
        }
        double t = total(results);
        sb.append(String.format("score %s over %d task%s%n", Double.isNaN(t) ? "-" : String.format("%.4f", t), results.size(), results.size() == 1 ? "" : "s"));
        return sb.toString();
    }
}
