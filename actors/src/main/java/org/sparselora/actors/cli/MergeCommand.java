package org.sparselora.actors.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.io.AdapterFiles;
import org.sparselora.engine.io.FormatException;
import org.sparselora.engine.io.HfCheckpointWriter;
import org.sparselora.engine.io.PeftAdapter;
import org.sparselora.engine.io.WeightSource;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code sparselora merge}: writes a HF checkpoint directory with a PEFT adapter merged into the
 * base weights ({@code W += s·B·A} in fp32, then stored as F32 or BF16), as PEFT's
 * {@code merge_and_unload()} followed by {@code save_pretrained()} would. The tokenizer and
 * generation files of the base directory are copied along. The output is built in a temporary
 * sibling and renamed into place; an existing non-empty output directory is refused unless
 * {@code --overwrite} is given.
 */
@Command(name = "merge", mixinStandardHelpOptions = true,
        description = "Merge a PEFT adapter into its base model and write a HF checkpoint directory.")
public final class MergeCommand implements Callable<Integer> {

    @Option(names = "--model", required = true, paramLabel = "M", description = "base model: HF model directory or llama2.c .bin")
    Path model;

    @Option(names = "--adapter", required = true, paramLabel = "DIR", description = "PEFT adapter directory (adapter_config.json + adapter_model.safetensors)")
    Path adapter;

    @Option(names = "--out", required = true, paramLabel = "DIR", description = "output HF checkpoint directory")
    Path out;

    @Option(names = "--dtype", defaultValue = "bf16", paramLabel = "f32|bf16", description = "stored dtype of the merged weights (default: ${DEFAULT-VALUE})")
    String dtype;

    @Option(names = "--max-shard-size", defaultValue = "5GB", paramLabel = "SIZE",
            description = "largest shard (e.g. 2GB, 500MB; 0 = one file) (default: ${DEFAULT-VALUE})")
    String maxShard;

    @Option(names = "--overwrite", description = "replace an existing non-empty output directory")
    boolean overwrite;

    @Override
    public Integer call() throws Exception {
        DType dt = switch (dtype.toLowerCase(java.util.Locale.ROOT)) {
            case "f32", "fp32", "float32" -> DType.F32;
            case "bf16", "bfloat16" -> DType.BF16;
            default -> throw new IllegalArgumentException("--dtype '" + dtype + "': expected f32 or bf16");
        };
        long shard = parseSize(maxShard);
        if (!Files.isDirectory(adapter)) throw new FormatException(adapter, "no such directory (--adapter takes a PEFT adapter directory)");
        if (Files.exists(out) && !overwrite) {
            if (!Files.isDirectory(out)) throw new FormatException(out, "exists and is not a directory (--out takes a new directory)");
            try (var s = Files.list(out)) {
                if (s.findAny().isPresent()) throw new FormatException(out, "output directory is not empty (pass --overwrite to replace it)");
            }
        }
        Path absOut = out.toAbsolutePath().normalize(), absModel = model.toAbsolutePath().normalize();
        if (absOut.equals(absModel) || absModel.startsWith(absOut))
            throw new IllegalArgumentException("--out " + out + " would replace the base model it reads");
        AdapterFiles ad = PeftAdapter.read(adapter);
        try (WeightSource src = ModelFiles.openModel(model)) {
            HfCheckpointWriter.write(src, ad, out, dt, shard, Files.isDirectory(model) ? model : null);
        }
        System.out.println("merged " + adapter + " into " + model + " -> " + out);
        return 0;
    }

    /** "5GB", "500MB", "123456" (bytes), "0" (one file). */
    static long parseSize(String s) {
        String t = s.strip().toUpperCase(java.util.Locale.ROOT);
        long mult = 1;
        for (String[] u : new String[][] {{"GB", "1000000000"}, {"MB", "1000000"}, {"KB", "1000"}, {"B", "1"}}) {
            if (t.endsWith(u[0])) {
                mult = Long.parseLong(u[1]);
                t = t.substring(0, t.length() - u[0].length()).strip();
                break;
            }
        }
        try {
            long v = Long.parseLong(t);
            if (v < 0) throw new NumberFormatException();
            return Math.multiplyExact(v, mult);
        } catch (NumberFormatException | ArithmeticException e) {
            throw new IllegalArgumentException("--max-shard-size '" + s + "': expected a size such as 5GB, 500MB or 0");
        }
    }
}
