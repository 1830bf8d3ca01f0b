package org.sparselora.actors.demo;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.data.DatasetFormat;
import org.sparselora.engine.data.DatasetReader;
import org.sparselora.engine.data.Example;
import org.sparselora.engine.data.ExampleTokenizer;
import org.sparselora.engine.data.TokenizedExample;
import org.sparselora.engine.io.FormatException;
import org.sparselora.engine.sparse.SparsityConfig;
import org.sparselora.engine.tokenizer.HfTokenizer;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.tokenizer.Tokenizers;

/** The files the demo hands to the ordinary job path read back as the demo's own objects. */
class DemoFilesTest {

    @TempDir Path dir;

    @Test
    void hfTokenizerJsonEncodesExactlyLikeTheCharTokenizer() {
        DemoTokenizerFiles.ensure(dir);
        CharTokenizer ref = new CharTokenizer();
        try (Tokenizer hf = Tokenizers.load(dir)) {
            assertTrue(hf instanceof HfTokenizer, hf.getClass().toString());
            assertEquals(CharTokenizer.BOS, hf.bosId());
            assertEquals(CharTokenizer.EOS, hf.eosId());
            assertEquals(CharTokenizer.PAD, hf.padId());
            assertEquals(ref.vocabSize(), hf.vocabSize());
            List<String> texts = List.of("", "a", "abcdef>", "abcdef>bcdefg", "  >> ", CharTokenizer.ALPHABET, "zz 99 a=b+c-d.e:f|g");
            for (String t : texts) {
                assertArrayEquals(ref.encode(t, true), hf.encode(t, true), "with BOS: '" + t + "'");
                assertArrayEquals(ref.encode(t, false), hf.encode(t, false), "without BOS: '" + t + "'");
                assertEquals(t, hf.decode(hf.encode(t, true)), "decode: '" + t + "'");
            }
            // the generated task itself, through the trainer's tokenization (prompt/response split, EOS)
            for (Example e : DemoTask.examples(DemoTask.Kind.SHIFT, 50, 3, false)) {
                TokenizedExample a = ExampleTokenizer.tokenize(ref, e), b = ExampleTokenizer.tokenize(hf, e);
                assertArrayEquals(a.prompt(), b.prompt(), e.prompt());
                assertArrayEquals(a.response(), b.response(), e.response());
            }
        }
    }

    @Test
    void ensureRepairsAStaleTokenizerFile() throws IOException {
        DemoTokenizerFiles.ensure(dir);
        Files.writeString(dir.resolve("tokenizer.json"), "{\"model\": {}}");
        DemoTokenizerFiles.ensure(dir);
        assertEquals(DemoTokenizerFiles.tokenizerJson(), Files.readString(dir.resolve("tokenizer.json")));
    }

    @Test
    void datasetRoundTripsThroughTheReaderVerbatim() {
        List<Example> ex = DemoTask.examples(DemoTask.Kind.SHIFT, 40, 9, true);
        Path f = dir.resolve("data/shift_eval.jsonl");
        DemoFiles.writeDataset(f, ex);
        DatasetReader.Dataset d = DatasetReader.read(f, null, DatasetReader.Options.DEFAULT);   // format detected
        assertEquals(DatasetFormat.PROMPT_COMPLETION, d.format());
        assertTrue(d.malformed().isEmpty());
        assertEquals(ex.size(), d.examples().size());
        for (int i = 0; i < ex.size(); i++) {
            Example want = ex.get(i), got = d.examples().get(i);
            assertEquals(want.prompt(), got.prompt());          // no template around it
            assertEquals(want.response(), got.response());
            assertEquals(want.answer(), got.answer());
            assertEquals(i + 1, got.line());
        }
    }

    @Test
    void promptCompletionRecordsWithProblemsAreReportedNotFatal() throws IOException {
        Path f = dir.resolve("pc.jsonl");
        Files.writeString(f, """
                {"prompt": "ab>", "completion": "bc", "answer": 7}
                {"prompt": "ab>"}
                {"prompt": 3, "completion": "x"}
                {"prompt": "cd>", "completion": "de"}
                """);
        DatasetReader.Dataset d = DatasetReader.read(f, DatasetFormat.parse("prompt_completion"), DatasetReader.Options.DEFAULT);
        assertEquals(List.of(new Example("ab>", "bc", "7", 1), new Example("cd>", "de", "de", 4)), d.examples());
        assertEquals(List.of(new DatasetReader.Malformed(2, "missing field 'completion'"),
                new DatasetReader.Malformed(3, "field 'prompt' is number, not a string")), d.malformed());
        Path none = dir.resolve("none.jsonl");
        Files.writeString(none, "{\"prompt\": \"x\"}\n");
        FormatException e = assertThrows(FormatException.class, () -> DatasetReader.read(none, DatasetFormat.PROMPT_COMPLETION, DatasetReader.Options.DEFAULT));
        assertTrue(e.getMessage().contains(none.toString()) && e.getMessage().contains("no usable records"), e.getMessage());
    }

    @Test
    void sparsityYamlIsAValidConfigWithDenseEndLayers() {
        int layers = DemoModel.config().numLayers();
        double[] mid = new double[layers], none = new double[layers];
        Path f = dir.resolve("sparsity.yaml");
        DemoFiles.writeText(f, DemoFiles.sparsityYaml(layers, 0.9, 0.5, 0.1));
        SparsityConfig c = SparsityConfig.load(f);
        SparsityConfig.Resolved r = c.resolve(DemoModel.config());
        java.util.Arrays.fill(mid, 1, layers - 1, 0.9);
        assertArrayEquals(mid, r.mlpRatio(), 1e-6);
        java.util.Arrays.fill(mid, 1, layers - 1, 0.5);
        assertArrayEquals(mid, r.attnRatio(), 1e-6);
        assertEquals(0.1, c.startStep(), 1e-12);
        assertEquals(8, c.rank());

        // the demo's default: attention left dense, so no self_attn entries at all
        DemoFiles.writeText(f, DemoFiles.sparsityYaml(layers, 0.95, 0, 0.1));
        assertTrue(!DemoFiles.sparsityYaml(layers, 0.95, 0, 0.1).contains("self_attn"));
        SparsityConfig.Resolved m = SparsityConfig.load(f).resolve(DemoModel.config());
        java.util.Arrays.fill(mid, 1, layers - 1, 0.95);
        assertArrayEquals(mid, m.mlpRatio(), 1e-6);
        assertArrayEquals(none, m.attnRatio(), 1e-6);
    }
}
