package org.sparselora.engine.hardening;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.data.DatasetReader;
import org.sparselora.engine.data.PromptTemplate;
import org.sparselora.engine.io.FormatException;
import org.sparselora.engine.io.HfCheckpoint;
import org.sparselora.engine.io.HfConfig;
import org.sparselora.engine.io.Llama2cCheckpoint;
import org.sparselora.engine.io.PeftAdapter;

/**
 * Inputs that used to load and give wrong numbers (or silently ignore a setting) are errors now,
 * each naming the file and the field: a config.json with fewer layers than its checkpoint, a
 * non-positive rope_theta, a llama2.c header whose head counts do not match the file, PEFT fields
 * this engine does not implement, a JSONL line with content after its object. Errors about a file
 * never repeat its content.
 */
class SilentWrongResultsTest {

    static final ObjectMapper JSON = new ObjectMapper();
    static final Path GOLDEN = Path.of("src/test/resources/golden/llama");

    @TempDir
    Path dir;

    /** A copy of the golden tiny Llama with config.json edited. */
    private Path modelWith(String key, Object value) throws IOException {
        Path m = Files.createDirectories(dir.resolve("model-" + key));
        try (Stream<Path> files = Files.list(GOLDEN.resolve("model"))) {
            for (Path f : files.toList()) Files.copy(f, m.resolve(f.getFileName()));
        }
        ObjectNode c = (ObjectNode) JSON.readTree(m.resolve("config.json").toFile());
        // transformers 5 keeps rope_theta inside rope_parameters
        ObjectNode into = key.equals("rope_theta") && c.has("rope_parameters") ? (ObjectNode) c.get("rope_parameters") : c;
        into.set(key, JSON.valueToTree(value));
        Files.writeString(m.resolve("config.json"), JSON.writeValueAsString(c));
        return m;
    }

    @Test
    void fewerLayersInConfigThanInTheCheckpointIsAnError() throws Exception {
        int layers = HfConfig.read(GOLDEN.resolve("model")).numLayers();
        assertTrue(layers >= 2, "the fixture needs two layers");
        Path m = modelWith("num_hidden_layers", layers - 1);
        FormatException e = assertThrows(FormatException.class, () -> HfCheckpoint.open(m).close());
        assertTrue(e.getMessage().contains("num_hidden_layers " + (layers - 1)) && e.getMessage().contains("layer " + (layers - 1)), e.getMessage());
        assertDoesNotThrow(() -> HfCheckpoint.open(GOLDEN.resolve("model")).close());
    }

    @Test
    void nonPositiveRopeThetaIsAnError() throws Exception {
        for (Object v : List.of(-1, 0, 0.0)) {
            Path m = modelWith("rope_theta", v);
            FormatException e = assertThrows(FormatException.class, () -> HfConfig.read(m));
            assertTrue(e.getMessage().contains("rope_theta must be a positive number"), e.getMessage());
            Files.walk(m).sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }

    @Test
    void llama2cHeaderWithOtherHeadCountsIsAnError() throws Exception {
        Path ok = Llama2cFiles.valid(dir.resolve("ok.bin"));
        try (Llama2cCheckpoint c = Llama2cCheckpoint.open(ok)) {
            assertEquals(4, c.config().numHeads());
        }
        // same bytes, header says 2 heads (1 kv head): the file is long enough, but it is not that model
        byte[] b = Files.readAllBytes(ok);
        java.nio.ByteBuffer.wrap(b).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(12, 2).putInt(16, 1);
        Path wrong = Files.write(dir.resolve("heads.bin"), b);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Llama2cCheckpoint.open(wrong).close());
        assertTrue(e.getMessage().startsWith(wrong.toString()) && (e.getMessage().contains("does not match the weights") || e.getMessage().contains("truncated")), e.getMessage());
        // a header whose sizes add up to the same byte count with other heads is caught by the exact-size rule:
        // 8 heads of 2 dims (and 4 kv heads) keep kv_dim at 8 but halve the RoPE tables, so the file is too long
        byte[] c = Files.readAllBytes(ok);
        java.nio.ByteBuffer.wrap(c).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(12, 8).putInt(16, 4);
        Path same = Files.write(dir.resolve("heads8.bin"), c);
        IllegalArgumentException e8 = assertThrows(IllegalArgumentException.class, () -> Llama2cCheckpoint.open(same).close());
        assertTrue(e8.getMessage().contains("does not match the weights") && e8.getMessage().contains("heads=8"), e8.getMessage());
        // and trailing bytes after the last array
        Path longer = Files.write(dir.resolve("longer.bin"), java.util.Arrays.copyOf(Files.readAllBytes(ok), (int) Files.size(ok) + 64));
        assertThrows(IllegalArgumentException.class, () -> Llama2cCheckpoint.open(longer).close());
    }

    @Test
    void unsupportedPeftFieldsAreRefusedByName() throws Exception {
        for (var f : List.of(new Object[] {"layer_replication", List.of(List.of(0, 2))}, new Object[] {"layers_to_transform", List.of(0)},
                new Object[] {"exclude_modules", List.of("q_proj")}, new Object[] {"alora_invocation_tokens", List.of(1, 2)})) {
            Path a = Files.createDirectories(dir.resolve("adapter-" + f[0]));
            Files.copy(GOLDEN.resolve("adapter/adapter_model.safetensors"), a.resolve(PeftAdapter.WEIGHTS));
            ObjectNode c = (ObjectNode) JSON.readTree(GOLDEN.resolve("adapter/adapter_config.json").toFile());
            c.set((String) f[0], JSON.valueToTree(f[1]));
            Files.writeString(a.resolve(PeftAdapter.CONFIG), JSON.writeValueAsString(c));
            FormatException e = assertThrows(FormatException.class, () -> PeftAdapter.read(a));
            assertTrue(e.getMessage().contains(f[0] + " is set"), e.getMessage());
        }
        // the same fields unset (null / empty) are fine: that is how PEFT writes "not used"
        Path a = Files.createDirectories(dir.resolve("adapter-nulls"));
        Files.copy(GOLDEN.resolve("adapter/adapter_model.safetensors"), a.resolve(PeftAdapter.WEIGHTS));
        ObjectNode c = (ObjectNode) JSON.readTree(GOLDEN.resolve("adapter/adapter_config.json").toFile());
        c.putNull("layer_replication").putNull("layers_to_transform").putNull("exclude_modules").putNull("alora_invocation_tokens");
        Files.writeString(a.resolve(PeftAdapter.CONFIG), JSON.writeValueAsString(c));
        assertDoesNotThrow(() -> PeftAdapter.read(a));
    }

    @Test
    void trailingGarbageAfterAJsonlRecordIsReportedWithItsLine() throws Exception {
        Path data = Files.writeString(dir.resolve("d.jsonl"), """
                {"instruction": "a", "input": "", "output": "b"}
                {"instruction": "c", "input": "", "output": "d"} trailing
                {"instruction": "e", "input": "", "output": "f"}
                """);
        DatasetReader.Dataset ds = DatasetReader.read(data, null, new DatasetReader.Options(PromptTemplate.LLM_ADAPTERS, "text"));
        assertEquals(2, ds.examples().size());
        assertEquals(1, ds.malformed().size());
        assertEquals(2, ds.malformed().get(0).line());
        assertTrue(ds.malformed().get(0).reason().startsWith("invalid JSON"), ds.malformed().get(0).reason());
        Path data2 = Files.writeString(dir.resolve("d2.jsonl"), "{\"instruction\": \"a\", \"input\": \"\", \"output\": \"b\"} {\"x\": 1}\n"
                + "{\"instruction\": \"c\", \"input\": \"\", \"output\": \"d\"}\n");
        DatasetReader.Dataset ds2 = DatasetReader.read(data2, null, new DatasetReader.Options(PromptTemplate.LLM_ADAPTERS, "text"));
        assertEquals(1, ds2.malformed().get(0).line());
        assertTrue(ds2.malformed().get(0).reason().contains("trailing content"), ds2.malformed().get(0).reason());
    }

    @Test
    void errorsAboutAFileNeverQuoteItsContent() throws Exception {
        String secret = "root:x:0:0:SECRETVALUE";
        Path f = Files.writeString(dir.resolve("config.json"), secret + "\n");
        FormatException e = assertThrows(FormatException.class, () -> HfConfig.read(f));
        assertFalse(e.getMessage().contains("root") || e.getMessage().contains("SECRET"), e.getMessage());
        Path data = Files.writeString(dir.resolve("shadow.jsonl"), secret + "\n");
        FormatException d = assertThrows(FormatException.class, () -> DatasetReader.read(data, null, new DatasetReader.Options(PromptTemplate.LLM_ADAPTERS, "text")));
        assertFalse(d.getMessage().contains("root") || d.getMessage().contains("SECRET"), d.getMessage());
        Path st = Files.writeString(dir.resolve("x.safetensors"), "\u0010\0\0\0\0\0\0\0{root:SECRETVAL}");
        FormatException s = assertThrows(FormatException.class, () -> org.sparselora.engine.io.Safetensors.open(st));
        assertFalse(s.getMessage().contains("SECRET"), s.getMessage());
    }
}
