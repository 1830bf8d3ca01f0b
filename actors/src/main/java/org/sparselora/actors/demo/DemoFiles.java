package org.sparselora.actors.demo;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import org.sparselora.engine.data.Example;
import org.sparselora.engine.io.AtomicFiles;

/**
 * The files the demo hands to the ordinary job path: the generated task as prompt/completion JSONL
 * (read back by {@code DatasetReader}, which detects the format and uses the prompt verbatim) and
 * the demo's SparseLoRA config in the published YAML schema (docs/METHOD.md#config). Both are written to a temp
 * file and renamed.
 */
public final class DemoFiles {
    public static final String TRAIN = "shift_train.jsonl", EVAL = "shift_eval.jsonl";

    private static final ObjectMapper JSON = new ObjectMapper();

    private DemoFiles() {}

    /** One {@code {"prompt": …, "completion": …}} object per line. */
    public static void writeDataset(Path file, List<Example> examples) {
        AtomicFiles.writeFile(file, tmp -> {
            try (BufferedWriter w = Files.newBufferedWriter(tmp, StandardCharsets.UTF_8)) {
                for (Example e : examples) {
                    ObjectNode o = JSON.createObjectNode();
                    o.put("prompt", e.prompt());
                    o.put("completion", e.response());
                    w.write(JSON.writeValueAsString(o));
                    w.write('\n');
                }
            }
        });
    }

    /**
     * The demo's sparsity config for a {@code layers}-layer model: the first and last layers stay
     * dense (the published configs leave the ends alone too: they are the most sensitive), the
     * middle layers prune {@code mlp} of the MLP channels and {@code attn} of the attention
     * channels (a zero ratio leaves that part dense); dense warm-up for the first {@code startStep} of the steps; output tokens dense.
     */
    public static String sparsityYaml(int layers, double mlp, double attn, double startStep) {
        StringBuilder sb = new StringBuilder();
        sb.append("# SparseLoRA config of the `sparselora demo` model (").append(layers).append(" layers): first and last\n")
          .append("# layers dense, the middle ones sparse; dense warm-up for the first ")
          .append(String.format(Locale.ROOT, "%.0f%%", 100 * startStep)).append(" of the steps.\n")
          .append(String.format(Locale.ROOT, "start_step: %s%nend_step: 1.0%nmode: svd_8%nskip_output_tokens: true%nsparsity:%n", startStep));
        for (int l = 1; l < layers - 1; l++) {
            // a zero ratio is left out: unlisted modules are dense
            if (mlp > 0) sb.append(String.format(Locale.ROOT, "  layers.%d.mlp: %s%n", l, mlp));
            if (attn > 0) sb.append(String.format(Locale.ROOT, "  layers.%d.self_attn: %s%n", l, attn));
        }
        return sb.toString();
    }

    public static void writeText(Path file, String text) {
        AtomicFiles.writeFile(file, tmp -> Files.writeString(tmp, text, StandardCharsets.UTF_8));
    }
}
