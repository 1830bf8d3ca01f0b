package org.sparselora.engine.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Loader for one golden fixture exported from HF transformers + PEFT (the test that compares the
 * engine with it lives with the model code). Layout of a fixture directory:
 * <pre>
 *   model/                  config.json + model.safetensors (F32)
 *   model-bf16-sharded/     the same weights in BF16, two shards + model.safetensors.index.json
 *   tokenizer.json
 *   adapter/                PEFT adapter_config.json + adapter_model.safetensors
 *   inputs.json             {"input_ids": [[...]], "labels": [[...]]}   (B rows of T ids; labels -100 = ignored)
 *                           optional "attention_mask" and "position_ids" of the same shape
 *   expected.safetensors    logits (B,T,V) F32, loss (1), grad.&lt;PEFT lora name&gt; per LoRA tensor;
 *                           optional logits_base / loss_base (the model without the adapter)
 *   score/                  optional: texts.jsonl, ids.jsonl, expected.jsonl, expected_adapter.jsonl
 * </pre>
 * As {@code scripts/export_hf_golden.py} writes them, logits at padded positions (attention mask 0)
 * are zero and carry no meaning.
 * {@link #open} checks that every piece is there and consistent (shapes of logits and gradients
 * against the inputs, the config and the adapter); a missing piece is an error naming it, never a
 * skipped test.
 */
public final class GoldenFixtures implements AutoCloseable {

    public static final String GRAD_PREFIX = "grad.";

    private final Path dir;
    private final HfCheckpoint model;
    private final HfCheckpoint shardedModel;
    private final AdapterFiles adapter;
    private final int[][] inputIds;
    private final int[][] labels;
    private final int[][] attentionMask;
    private final int[][] positionIds;
    private final Safetensors expected;
    private final Map<String, HostTensor> grads;

    private GoldenFixtures(Path dir, HfCheckpoint model, HfCheckpoint shardedModel, AdapterFiles adapter,
                           int[][] inputIds, int[][] labels, int[][] attentionMask, int[][] positionIds,
                           Safetensors expected, Map<String, HostTensor> grads) {
        this.dir = dir;
        this.model = model;
        this.shardedModel = shardedModel;
        this.adapter = adapter;
        this.inputIds = inputIds;
        this.labels = labels;
        this.attentionMask = attentionMask;
        this.positionIds = positionIds;
        this.expected = expected;
        this.grads = grads;
    }

    /** The fixture {@code golden/<family>} on the test classpath (e.g. "llama", "qwen2"). */
    public static GoldenFixtures fromClasspath(String family) {
        URL url = GoldenFixtures.class.getClassLoader().getResource("golden/" + family);
        if (url == null)
            throw new IllegalStateException("golden fixture 'golden/" + family + "' is not on the classpath "
                    + "(expected engine/src/test/resources/golden/" + family + "/)");
        try {
            return open(Path.of(url.toURI()));
        } catch (URISyntaxException e) {
            throw new IllegalStateException("bad fixture URL " + url, e);
        }
    }

    public static GoldenFixtures open(Path dir) {
        for (String piece : List.of("model", "model-bf16-sharded", "tokenizer.json", "adapter", "inputs.json", "expected.safetensors"))
            if (!Files.exists(dir.resolve(piece))) throw new FormatException(dir, "golden fixture lacks " + piece);
        List<AutoCloseable> opened = new ArrayList<>();
        try {
            HfCheckpoint model = HfCheckpoint.open(dir.resolve("model"));
            opened.add(model);
            HfCheckpoint sharded = HfCheckpoint.open(dir.resolve("model-bf16-sharded"));
            opened.add(sharded);
            if (!model.config().equals(sharded.config()))
                throw new FormatException(dir, "model/ and model-bf16-sharded/ have different configs");
            AdapterFiles adapter = PeftAdapter.read(dir.resolve("adapter"));
            PeftAdapter.validate(dir.resolve("adapter"), adapter, model.config());

            Path inputs = dir.resolve("inputs.json");
            JsonNode in;
            try {
                in = new ObjectMapper().readTree(inputs.toFile());
            } catch (IOException e) {
                throw new FormatException(inputs, "not valid JSON: " + e.getMessage().lines().findFirst().orElse(""));
            }
            int[][] ids = matrix(inputs, in, "input_ids");
            int[][] labels = matrix(inputs, in, "labels");
            if (ids.length != labels.length || ids[0].length != labels[0].length)
                throw new FormatException(inputs, "input_ids and labels differ in shape");
            int[][] mask = in.has("attention_mask") ? matrix(inputs, in, "attention_mask") : null;
            int[][] pos = in.has("position_ids") ? matrix(inputs, in, "position_ids") : null;
            for (int[][] m : new int[][][] {mask, pos})
                if (m != null && (m.length != ids.length || m[0].length != ids[0].length))
                    throw new FormatException(inputs, "attention_mask/position_ids differ in shape from input_ids");
            for (int[] row : ids)
                for (int t : row)
                    if (t < 0 || t >= model.config().vocabSize())
                        throw new FormatException(inputs, "token id " + t + " outside the vocabulary of " + model.config().vocabSize());

            Safetensors expected = Safetensors.open(dir.resolve("expected.safetensors"));
            opened.add(expected);
            int b = ids.length, t = b == 0 ? 0 : ids[0].length;
            expectShape(expected, "logits", new int[] {b, t, model.config().vocabSize()});
            expectShape(expected, "loss", new int[] {1});
            if (expected.has("logits_base")) expectShape(expected, "logits_base", new int[] {b, t, model.config().vocabSize()});
            if (expected.has("loss_base")) expectShape(expected, "loss_base", new int[] {1});
            LinkedHashMap<String, HostTensor> grads = new LinkedHashMap<>();
            for (HostTensor h : expected.tensors().values()) {
                if (!h.name().startsWith(GRAD_PREFIX)) continue;
                String lora = h.name().substring(GRAD_PREFIX.length());
                int[] shape = adapter.shapes().get(lora);
                if (shape == null)
                    throw new FormatException(expected.path(), "gradient '" + h.name() + "' names no tensor of the adapter");
                if (!Arrays.equals(shape, h.shape()))
                    throw new FormatException(expected.path(), "gradient '" + h.name() + "' has shape " + Arrays.toString(h.shape())
                            + " but the adapter tensor is " + Arrays.toString(shape));
                grads.put(lora, h);
            }
            if (grads.size() != adapter.tensors().size())
                throw new FormatException(expected.path(), "has " + grads.size() + " gradients for "
                        + adapter.tensors().size() + " adapter tensors");
            return new GoldenFixtures(dir, model, sharded, adapter, ids, labels, mask, pos, expected,
                    Collections.unmodifiableMap(grads));
        } catch (RuntimeException e) {
            for (AutoCloseable c : opened) {
                try { c.close(); } catch (Exception ignored) { }
            }
            throw e;
        }
    }

    private static int[][] matrix(Path file, JsonNode root, String key) {
        JsonNode m = root == null ? null : root.get(key);
        if (m == null || !m.isArray() || m.isEmpty()) throw new FormatException(file, "missing or empty '" + key + "'");
        int[][] out = new int[m.size()][];
        for (int i = 0; i < out.length; i++) {
            JsonNode row = m.get(i);
            if (!row.isArray()) throw new FormatException(file, key + "[" + i + "] is not a list");
            out[i] = new int[row.size()];
            for (int j = 0; j < out[i].length; j++) {
                if (!row.get(j).canConvertToInt()) throw new FormatException(file, key + "[" + i + "][" + j + "] is not an integer");
                out[i][j] = row.get(j).asInt();
            }
            if (out[i].length != out[0].length) throw new FormatException(file, key + " rows differ in length");
        }
        return out;
    }

    private static void expectShape(Safetensors st, String name, int[] shape) {
        if (!st.has(name)) throw new FormatException(st.path(), "missing tensor '" + name + "'");
        HostTensor h = st.get(name);
        if (!Arrays.equals(h.shape(), shape))
            throw new FormatException(st.path(), "tensor '" + name + "' has shape " + Arrays.toString(h.shape())
                    + ", expected " + Arrays.toString(shape));
    }

    public Path dir() { return dir; }

    /** config.json + F32 weights. */
    public HfCheckpoint model() { return model; }

    /** The same weights in BF16, sharded with an index. */
    public HfCheckpoint shardedModel() { return shardedModel; }

    public Path tokenizerJson() { return dir.resolve("tokenizer.json"); }

    public Path adapterDir() { return dir.resolve("adapter"); }

    public AdapterFiles adapter() { return adapter; }

    /** (B, T) token ids. */
    public int[][] inputIds() { return inputIds; }

    /** (B, T) labels as HF takes them (unshifted; -100 ignored). */
    public int[][] labels() { return labels; }

    /** (B, T) 1 for real tokens, 0 for padding (an error if the fixture has none). */
    public int[][] attentionMask() {
        if (attentionMask == null) throw new FormatException(dir.resolve("inputs.json"), "has no attention_mask");
        return attentionMask;
    }

    /** (B, T) RoPE positions as HF was given them. */
    public int[][] positionIds() {
        if (positionIds == null) throw new FormatException(dir.resolve("inputs.json"), "has no position_ids");
        return positionIds;
    }

    /** (B, T, V) logits from HF, F32. */
    public HostTensor logits() { return expected.get("logits"); }

    /** HF's mean cross-entropy over the non-ignored (shifted) labels. */
    public float loss() { return expected.get("loss").toFloats()[0]; }

    /** (B, T, V) logits of the base model without the adapter. */
    public HostTensor logitsBase() { return expected.get("logits_base"); }

    public float lossBase() { return expected.get("loss_base").toFloats()[0]; }

    /** One expected {@code score} line: record index, token count, mean next-token CE (nats). */
    public record ScoreLine(int index, int tokens, double loss) {}

    /** The texts {@code score} is run on ({@code score/texts.jsonl}). */
    public List<String> scoreTexts() {
        List<String> out = new ArrayList<>();
        for (JsonNode n : jsonl("texts.jsonl")) out.add(n.path("text").asText());
        return out;
    }

    /** HF's tokenization of each score text ({@code score/ids.jsonl}). */
    public List<int[]> scoreIds() {
        List<int[]> out = new ArrayList<>();
        for (JsonNode n : jsonl("ids.jsonl")) {
            JsonNode a = n.path("ids");
            int[] ids = new int[a.size()];
            for (int i = 0; i < ids.length; i++) ids[i] = a.get(i).asInt();
            out.add(ids);
        }
        return out;
    }

    /** HF's score output for the base model, or with the adapter. */
    public List<ScoreLine> scoreExpected(boolean withAdapter) {
        List<ScoreLine> out = new ArrayList<>();
        for (JsonNode n : jsonl(withAdapter ? "expected_adapter.jsonl" : "expected.jsonl"))
            out.add(new ScoreLine(n.path("index").asInt(), n.path("tokens").asInt(), n.path("loss").asDouble()));
        return out;
    }

    private List<JsonNode> jsonl(String name) {
        Path f = dir.resolve("score").resolve(name);
        if (!Files.isRegularFile(f)) throw new FormatException(f, "golden fixture lacks score/" + name);
        ObjectMapper m = new ObjectMapper();
        List<JsonNode> out = new ArrayList<>();
        try {
            for (String line : Files.readAllLines(f)) if (!line.isBlank()) out.add(m.readTree(line));
        } catch (IOException e) {
            throw new FormatException(f, "cannot read: " + e.getMessage().lines().findFirst().orElse(""));
        }
        return out;
    }

    /** HF/PEFT gradients of the loss, keyed by the adapter's PEFT tensor names. */
    public Map<String, HostTensor> grads() { return grads; }

    @Override
    public void close() {
        model.close();
        shardedModel.close();
        expected.close();
    }
}
