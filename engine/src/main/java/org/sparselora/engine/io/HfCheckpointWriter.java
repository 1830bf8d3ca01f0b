package org.sparselora.engine.io;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.model.LlamaConfig;

/**
 * Writes a HF checkpoint directory ({@code config.json} + {@code model.safetensors}, or shards
 * {@code model-0000i-of-0000n.safetensors} with {@code model.safetensors.index.json}) from any
 * {@link WeightSource}, optionally with a LoRA adapter merged in: {@code W += s·B·A}, computed in
 * fp32 from the stored weights, then stored as F32 or BF16. Tensors are produced and written one
 * at a time, so merging never holds more than one weight matrix beyond the mapped source. The
 * whole directory is built in a temporary sibling and renamed into place.
 */
public final class HfCheckpointWriter {

    /** Tokenizer and generation files copied along when {@code copyFrom} is given. */
    public static final List<String> SIDE_FILES = List.of("tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "generation_config.json", "tokenizer.model");

    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    /**
     * Shard limit of trained checkpoints: 2 GB (decimal, as HF writes its {@code max_shard_size}).
     * Small models stay one {@code model.safetensors}; larger ones get shards a download can resume
     * and a 32-bit tool can still map, with few enough files for an 8B model in fp32 (16 shards).
     */
    public static final long DEFAULT_MAX_SHARD_BYTES = 2_000_000_000L;

    /** Files that sit beside a {@code tokenizer.json} and belong to it. */
    private static final List<String> TOKENIZER_SIBLINGS = List.of("tokenizer_config.json", "special_tokens_map.json", "generation_config.json");

    private HfCheckpointWriter() {}

    /**
     * @param adapter       merged into the weights when non-null (checked against the source's config)
     * @param dtype         F32 or BF16 (F16 is accepted too)
     * @param maxShardBytes 0 for one file; otherwise shards hold at most this many bytes (a tensor
     *                      larger than the limit gets a shard of its own)
     * @param copyFrom      directory whose tokenizer/generation files are copied along, or null
     */
    public static void write(WeightSource src, AdapterFiles adapter, Path outDir, DType dtype, long maxShardBytes,
                             Path copyFrom) {
        write(src, adapter, outDir, dtype, maxShardBytes, copyFrom == null ? null : tmp -> copySideFiles(copyFrom, tmp));
    }

    /**
     * A trained model (full-parameter training's {@code OUTPUT_DIR/model/}): the weights as they are,
     * sharded above {@link #DEFAULT_MAX_SHARD_BYTES}, with the tokenizer the run used so that the
     * directory is a complete model for {@code score}, {@code generate}, {@code train} and HF
     * transformers.
     *
     * @param tokenizer the path the tokenizer was loaded from, or null (a run without tokenizer files):
     *                  a model directory (its tokenizer and generation files are copied), a
     *                  {@code tokenizer.json} (copied with the {@code tokenizer_config.json},
     *                  {@code special_tokens_map.json} and {@code generation_config.json} beside it),
     *                  or a llama2.c {@code .bin} (copied as {@code tokenizer.bin}, which the engine's
     *                  tools read from a model directory)
     */
    public static void writeTrained(WeightSource src, Path outDir, DType dtype, long maxShardBytes, Path tokenizer) {
        if (tokenizer != null && !Files.exists(tokenizer)) throw new FormatException(tokenizer, "tokenizer to copy into " + outDir + " not found");
        write(src, null, outDir, dtype, maxShardBytes, tokenizer == null ? null : tmp -> copyTokenizer(tokenizer, tmp));
    }

    private static void write(WeightSource src, AdapterFiles adapter, Path outDir, DType dtype, long maxShardBytes,
                              AtomicFiles.FileWriter sideFiles) {
        if (!dtype.isFloating()) throw new IllegalArgumentException("checkpoint dtype must be F32, BF16 or F16, got " + dtype);
        LlamaConfig cfg = src.config();
        if (adapter != null) PeftAdapter.validate(outDir, adapter, cfg);
        float scale = adapter == null ? 0f : adapter.spec().scaling();

        List<Safetensors.Pending> all = new ArrayList<>();
        for (Map.Entry<String, int[]> e : HfCheckpoint.expectedShapes(cfg).entrySet()) {
            String name = e.getKey();
            int[] shape = e.getValue();
            all.add(new Safetensors.Pending(name, dtype, shape, () -> {
                float[] w = src.get(name).toFloats();
                if (adapter != null) mergeInto(name, w, shape, adapter, scale);
                return Dtypes.fromFloats(dtype, w);
            }));
        }
        List<List<Safetensors.Pending>> shards = split(all, maxShardBytes);
        String torchDtype = switch (dtype) { case BF16 -> "bfloat16"; case F16 -> "float16"; default -> "float32"; };
        Map<String, String> meta = Map.of("format", "pt");

        AtomicFiles.writeDirectory(outDir, tmp -> {
            HfConfig.write(tmp.resolve("config.json"), cfg, torchDtype, null);
            if (shards.size() == 1) {
                Safetensors.writeStreaming(tmp.resolve(HfCheckpoint.SINGLE), shards.get(0), meta);
            } else {
                ObjectNode index = JSON.createObjectNode();
                long total = all.stream().mapToLong(Safetensors.Pending::byteSize).sum();
                index.putObject("metadata").put("total_size", total);
                ObjectNode map = index.putObject("weight_map");
                for (int i = 0; i < shards.size(); i++) {
                    String file = String.format("model-%05d-of-%05d.safetensors", i + 1, shards.size());
                    Safetensors.writeStreaming(tmp.resolve(file), shards.get(i), meta);
                    for (Safetensors.Pending p : shards.get(i)) map.put(p.name(), file);
                }
                Files.writeString(tmp.resolve(HfCheckpoint.INDEX), JSON.writeValueAsString(index) + "\n");
            }
            if (sideFiles != null) sideFiles.write(tmp);
        });
    }

    private static List<List<Safetensors.Pending>> split(List<Safetensors.Pending> all, long maxShardBytes) {
        List<List<Safetensors.Pending>> shards = new ArrayList<>();
        List<Safetensors.Pending> cur = new ArrayList<>();
        long size = 0;
        for (Safetensors.Pending p : all) {
            if (maxShardBytes > 0 && !cur.isEmpty() && size + p.byteSize() > maxShardBytes) {
                shards.add(cur);
                cur = new ArrayList<>();
                size = 0;
            }
            cur.add(p);
            size += p.byteSize();
        }
        shards.add(cur);
        return shards;
    }

    /** Merges the adapter's A/B for this weight, if it has them (name like model.layers.3.mlp.up_proj.weight). */
    private static void mergeInto(String name, float[] w, int[] shape, AdapterFiles adapter, float scale) {
        if (!name.endsWith("_proj.weight") || !name.startsWith("model.layers.")) return;
        String[] parts = name.split("\\.");   // model layers {i} {block} {module} weight
        int layer = Integer.parseInt(parts[2]);
        String module = parts[4];
        float[] a = adapter.tensors().get(PeftAdapter.loraAName(layer, module));
        float[] b = adapter.tensors().get(PeftAdapter.loraBName(layer, module));
        if (a == null || b == null) return;
        merge(w, a, b, shape[0], shape[1], adapter.spec().r(), scale);
    }

    /**
     * {@code w += s · b · a} in fp32.
     *
     * @param w (out, in) frozen weight, updated in place
     * @param a (r, in) lora_A
     * @param b (out, r) lora_B
     */
    public static void merge(float[] w, float[] a, float[] b, int out, int in, int r, float s) {
        for (int o = 0; o < out; o++) {
            int wRow = o * in;
            for (int k = 0; k < r; k++) {
                float coef = s * b[o * r + k];
                if (coef == 0f) continue;
                int aRow = k * in;
                for (int i = 0; i < in; i++) w[wRow + i] += coef * a[aRow + i];
            }
        }
    }

    private static void copySideFiles(Path from, Path to) throws IOException {
        for (String f : SIDE_FILES) {
            Path s = from.resolve(f);
            if (Files.isRegularFile(s)) Files.copy(s, to.resolve(f), StandardCopyOption.REPLACE_EXISTING);
        }
    }

    private static void copyTokenizer(Path tokenizer, Path to) throws IOException {
        if (Files.isDirectory(tokenizer)) {
            copySideFiles(tokenizer, to);
            Path bin = tokenizer.resolve("tokenizer.bin");
            if (Files.isRegularFile(bin)) Files.copy(bin, to.resolve("tokenizer.bin"), StandardCopyOption.REPLACE_EXISTING);
            return;
        }
        String name = tokenizer.getFileName().toString();
        if (name.endsWith(".bin")) {
            Files.copy(tokenizer, to.resolve("tokenizer.bin"), StandardCopyOption.REPLACE_EXISTING);
            return;
        }
        if (!name.endsWith(".json")) throw new FormatException(tokenizer, "unknown tokenizer file type to copy (expected tokenizer.json or a llama2.c .bin)");
        Files.copy(tokenizer, to.resolve("tokenizer.json"), StandardCopyOption.REPLACE_EXISTING);
        Path dir = tokenizer.toAbsolutePath().getParent();
        for (String f : TOKENIZER_SIBLINGS) {
            Path s = dir.resolve(f);
            if (Files.isRegularFile(s)) Files.copy(s, to.resolve(f), StandardCopyOption.REPLACE_EXISTING);
        }
    }

    /** Sorted shard layout for tests and tools: tensor name → shard file. */
    static LinkedHashMap<String, String> weightMap(Path dir) throws IOException {
        LinkedHashMap<String, String> m = new LinkedHashMap<>();
        var root = JSON.readTree(Files.readString(dir.resolve(HfCheckpoint.INDEX)));
        root.get("weight_map").fields().forEachRemaining(e -> m.put(e.getKey(), e.getValue().asText()));
        return m;
    }
}
