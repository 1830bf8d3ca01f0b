package org.sparselora.arcagi;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.function.UnaryOperator;

/**
 * The test-time-training data of one task (leave-one-out, as in the ARC TTT recipe): for every
 * demonstration pair i, the other demonstrations are the examples and pair i is the query whose
 * output carries the loss; every such record is repeated under the geometric transforms (identity,
 * three rotations, transpose) applied to all grids alike. Written as an Alpaca JSON file
 * ({@code instruction}, {@code input}, {@code output}) so the engine's reader and the response-only
 * loss apply unchanged; {@link #prompt} builds the same text for a test input.
 */
public final class TttDataset {

    static final String INSTRUCTION = "Each example maps an input grid to an output grid by the same rule. "
            + "Apply the rule to the last input. Grids are rows of digits 0-9.";

    private static final List<UnaryOperator<int[][]>> TRANSFORMS = List.of(
            g -> g, Grids::rot90, g -> Grids.rot90(Grids.rot90(g)), g -> Grids.rot90(Grids.rot90(Grids.rot90(g))), Grids::transpose);

    private TttDataset() {}

    public record Record(String instruction, String input, String output) {}

    public static List<Record> records(ArcTask task, boolean augment) {
        List<Record> out = new ArrayList<>();
        List<UnaryOperator<int[][]>> ts = augment ? TRANSFORMS : TRANSFORMS.subList(0, 1);
        for (UnaryOperator<int[][]> t : ts)
            for (int i = 0; i < task.train().size(); i++) {
                List<ArcTask.Pair> shots = new ArrayList<>();
                for (int j = 0; j < task.train().size(); j++)
                    if (j != i) shots.add(new ArcTask.Pair(t.apply(task.train().get(j).input()), t.apply(task.train().get(j).output())));
                ArcTask.Pair q = task.train().get(i);
                if (shots.isEmpty()) continue; // a one-pair task has nothing to learn from leave-one-out
                out.add(new Record(instruction(shots), "Input:\n" + Grids.render(t.apply(q.input())), Grids.render(t.apply(q.output()))));
            }
        return out;
    }

    /** Instruction (all demonstrations) and input (the test grid) for predicting a test output. */
    public static Record prompt(ArcTask task, int[][] testInput) {
        return new Record(instruction(task.train()), "Input:\n" + Grids.render(testInput), null);
    }

    static String instruction(List<ArcTask.Pair> shots) {
        StringBuilder sb = new StringBuilder(INSTRUCTION);
        for (ArcTask.Pair p : shots)
            sb.append("\n\nInput:\n").append(Grids.render(p.input())).append("\nOutput:\n").append(Grids.render(p.output()));
        return sb.toString();
    }

    /** Writes the records as an Alpaca JSON array (temp file + rename). */
    public static void write(List<Record> records, Path file) throws IOException {
        ObjectMapper m = new ObjectMapper();
        ArrayNode arr = m.createArrayNode();
        for (Record r : records) arr.addObject().put("instruction", r.instruction()).put("input", r.input()).put("output", r.output());
        Files.createDirectories(file.toAbsolutePath().getParent());
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        m.writerWithDefaultPrettyPrinter().writeValue(tmp.toFile(), arr);
        Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }
}
