package org.sparselora.engine.hardening;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.data.DatasetReader;
import org.sparselora.engine.data.PromptTemplate;
import org.sparselora.engine.io.AdapterFiles;
import org.sparselora.engine.io.HfConfig;
import org.sparselora.engine.io.HostTensor;
import org.sparselora.engine.io.Llama2cCheckpoint;
import org.sparselora.engine.io.PeftAdapter;
import org.sparselora.engine.io.Safetensors;
import org.sparselora.engine.model.LlamaConfig;

/**
 * The engine's input formats under mutation: safetensors files (header and length prefix),
 * config.json, dataset JSONL, PEFT adapters (config and weights) and llama2.c checkpoints (header
 * and size). Every mutant must load or fail with one clear error naming the file — no other
 * exception, no hang, nothing written. A bounded subset runs in every build; the full corpus
 * (1,000+ cases per format) with {@code -Dsparselora.fuzz=full}.
 */
class FormatFuzzTest {

    static final long SEED = 20261207L;
    static final int CI = 150, FULL = 1500;
    static final Path GOLDEN = Path.of("src/test/resources/golden/llama");
    static final List<Class<? extends Exception>> CLEAR = List.of(IllegalArgumentException.class, java.io.UncheckedIOException.class);

    @TempDir
    Path work;

    private static void check(Fuzz.Tally t) {
        assertEquals(0, t.crashes(), t + "\n" + String.join("\n", t.samples()));
        assertEquals(0, t.hangs(), t + "\n" + String.join("\n", t.samples()));
        assertTrue(t.clear() > t.tried() / 4, "most mutants should be errors: " + t);
    }

    @Test
    void safetensors() throws Exception {
        Path valid = work.resolve("valid.safetensors");
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        t.put("a.weight", new float[] {1, 2, 3, 4, 5, 6});
        t.put("b.bias", new float[] {7, 8});
        Safetensors.writeFloats(valid, t, Map.of("a.weight", new int[] {2, 3}, "b.bias", new int[] {2}), org.sparselora.engine.backend.DType.F32, Map.of("format", "pt"));
        byte[] bytes = Files.readAllBytes(valid);
        long headerLen = java.nio.ByteBuffer.wrap(bytes, 0, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong();
        check(Fuzz.run("safetensors", SEED, Fuzz.cases(CI, FULL), work,
                (r, d) -> Files.write(d.resolve("m.safetensors"), Fuzz.mutateBytes(r, bytes, r.nextInt(10) == 0 ? 0 : 8, (int) (8 + headerLen))),
                d -> {
                    try (Safetensors s = Safetensors.open(d.resolve("m.safetensors"))) {
                        for (HostTensor x : s.tensors().values()) if (x.dtype().isFloating()) x.toFloats();
                    }
                }, CLEAR));
    }

    @Test
    void configJson() throws Exception {
        String valid = Files.readString(GOLDEN.resolve("model/config.json"));
        check(Fuzz.run("config.json", SEED, Fuzz.cases(CI, FULL), work,
                (r, d) -> Files.writeString(d.resolve("config.json"), Fuzz.mutateText(r, valid)),
                d -> HfConfig.read(d.resolve("config.json")), CLEAR));
    }

    @Test
    void datasetLines() throws Exception {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < 4; i++)
            sb.append("{\"instruction\": \"add ").append(i).append(" and ").append(i + 1).append("\", \"input\": \"\", \"output\": \"").append(2 * i + 1).append("\"}\n");
        String valid = sb.toString();
        check(Fuzz.run("dataset-lines", SEED, Fuzz.cases(CI, FULL), work,
                (r, d) -> Files.write(d.resolve("d.jsonl"), Fuzz.mutateBytes(r, valid.getBytes(StandardCharsets.UTF_8), 0, valid.length())),
                d -> DatasetReader.read(d.resolve("d.jsonl"), null, new DatasetReader.Options(PromptTemplate.LLM_ADAPTERS, "text")), CLEAR));
    }

    @Test
    void peftAdapters() throws Exception {
        String cfg = Files.readString(GOLDEN.resolve("adapter/adapter_config.json"));
        byte[] weights = Files.readAllBytes(GOLDEN.resolve("adapter/adapter_model.safetensors"));
        long headerLen = java.nio.ByteBuffer.wrap(weights, 0, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong();
        LlamaConfig model = HfConfig.read(GOLDEN.resolve("model"));
        check(Fuzz.run("peft-adapter", SEED, Fuzz.cases(CI, FULL), work,
                (r, d) -> {
                    boolean config = r.nextInt(10) < 7;
                    Files.writeString(d.resolve(PeftAdapter.CONFIG), config ? Fuzz.mutateText(r, cfg) : cfg);
                    Files.write(d.resolve(PeftAdapter.WEIGHTS), config ? weights : Fuzz.mutateBytes(r, weights, 8, (int) (8 + headerLen)));
                },
                d -> {
                    AdapterFiles a = PeftAdapter.read(d);
                    PeftAdapter.validate(d, a, model);
                }, CLEAR));
    }

    @Test
    void llama2cHeaders() throws Exception {
        byte[] valid = Files.readAllBytes(Llama2cFiles.valid(work.resolve("valid.bin")));
        check(Fuzz.run("llama2c-header", SEED, Fuzz.cases(CI, FULL), work,
                (r, d) -> {
                    byte[] b = valid.clone();
                    if (r.nextInt(4) == 0) b = Fuzz.mutateBytes(r, b, 0, 28);
                    else {
                        java.nio.ByteBuffer bb = java.nio.ByteBuffer.wrap(b).order(java.nio.ByteOrder.LITTLE_ENDIAN);
                        int fields = 1 + r.nextInt(2);
                        for (int k = 0; k < fields; k++) {
                            int f = r.nextInt(7);
                            int[] v = {0, 1, -1, 2, 3, 4, 8, 16, 24, 32, 64, -32, Integer.MAX_VALUE, Integer.MIN_VALUE, 1 << 20, bb.getInt(f * 4) * 2, bb.getInt(f * 4) + 1};
                            bb.putInt(f * 4, v[r.nextInt(v.length)]);
                        }
                        if (r.nextInt(5) == 0) b = java.util.Arrays.copyOf(b, b.length - 4 * (1 + r.nextInt(64)));
                    }
                    Files.write(d.resolve("m.bin"), b);
                },
                d -> {
                    try (Llama2cCheckpoint c = Llama2cCheckpoint.open(d.resolve("m.bin"))) {
                        for (String n : c.names()) c.get(n).toFloats();
                    }
                }, CLEAR));
    }
}
