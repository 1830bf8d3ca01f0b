package org.sparselora.engine.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.io.FormatException;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.model.Batch;

class DatasetTest {

    @TempDir Path dir;

    /** Word-level test tokenizer: BOS 1, EOS 2, words get ids from 10 in order of first use. */
    static final class WordTokenizer implements Tokenizer {
        final Map<String, Integer> ids = new HashMap<>();
        final List<String> words = new ArrayList<>();
        final int pad;
        WordTokenizer(int pad) { this.pad = pad; }
        @Override public int[] encode(String text, boolean addSpecial) {
            List<Integer> out = new ArrayList<>();
            if (addSpecial) out.add(1);
            for (String w : text.trim().split("\\s+")) {
                if (w.isEmpty()) continue;
                out.add(ids.computeIfAbsent(w, k -> { words.add(k); return 9 + words.size(); }));
            }
            return out.stream().mapToInt(Integer::intValue).toArray();
        }
        @Override public String decode(int[] t) {
            StringBuilder b = new StringBuilder();
            for (int i : t) if (i >= 10) b.append(b.isEmpty() ? "" : " ").append(words.get(i - 10));
            return b.toString();
        }
        @Override public String decodeToken(int id) { return id >= 10 ? words.get(id - 10) : "<" + id + ">"; }
        @Override public int bosId() { return 1; }
        @Override public int eosId() { return 2; }
        @Override public int padId() { return pad; }
        @Override public int vocabSize() { return 10 + words.size(); }
    }

    private Path file(String name, String content) throws IOException {
        Path f = dir.resolve(name);
        Files.writeString(f, content);
        return f;
    }

    // ------------------------------------------------------------------ templates and readers

    @Test
    void llmAdaptersTemplateIsVerbatim() {
        String ind = "                ";
        assertEquals("Below is an instruction that describes a task, paired with an input that provides further context. "
                + "Write a response that appropriately completes the request. \n\n"
                + ind + "### Instruction:\n" + ind + "Add.\n" + ind + "\n" + ind + "### Input:\n" + ind + "2 3\n" + ind + "\n"
                + ind + "### Response:\n" + ind, PromptTemplate.LLM_ADAPTERS.prompt("Add.", "2 3"));
        assertEquals("Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n\n"
                + ind + "### Instruction:\n" + ind + "Add.\n" + ind + "\n" + ind + "### Response:\n" + ind,
                PromptTemplate.LLM_ADAPTERS.prompt("Add.", ""));
        assertEquals("Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
                + "### Instruction:\nAdd.\n\n### Response:\n", PromptTemplate.ALPACA.prompt("Add.", null));
    }

    @Test
    void alpacaJsonArraySkipsAndReportsMalformedRecords() throws IOException {
        Path f = file("math.json", """
            [
              {"instruction": "What is 2+3?", "input": "", "output": "2+3=5. The answer is 5.", "answer": "5"},
              {"instruction": "Sum", "input": "1 2", "output": "3", "answer": 3},
              {"instruction": "No output here", "input": ""},
              {"instruction": "Bad input type", "input": 7, "output": "x"},
              "not an object",
              {"instruction": "Fine", "output": "ok"}
            ]
            """);
        DatasetReader.Dataset d = DatasetReader.read(f, null, DatasetReader.Options.DEFAULT);
        assertEquals(DatasetFormat.ALPACA, d.format());
        assertEquals(3, d.examples().size());
        Example e = d.examples().get(0);
        assertEquals(PromptTemplate.LLM_ADAPTERS.prompt("What is 2+3?", ""), e.prompt());
        assertEquals("2+3=5. The answer is 5.", e.response());
        assertEquals("5", e.answer());
        assertEquals(2, e.line());
        assertEquals("3", d.examples().get(1).answer());            // numeric answer accepted as text
        assertEquals(PromptTemplate.LLM_ADAPTERS.prompt("Sum", "1 2"), d.examples().get(1).prompt());
        assertNull(d.examples().get(2).answer());
        assertEquals(List.of(new DatasetReader.Malformed(4, "missing field 'output'"),
                new DatasetReader.Malformed(5, "field 'input' is number, not a string"),
                new DatasetReader.Malformed(6, "record is not a JSON object")), d.malformed());
        String report = d.report();
        assertTrue(report.startsWith(f + ": skipped 3 malformed record(s) at line(s) 4, 5, 6"), report);
        assertTrue(!report.contains("\n"), report);
    }

    @Test
    void jsonlWithBadLinesGsm8kAndText() throws IOException {
        Path f = file("train.jsonl", """
            {"question": "Tom has 3 apples and buys 1,000 more. How many?", "answer": "3+1000=<<3+1000=1003>>1003\\n#### 1,003"}
            {"question": "broken", "answer": "no final line"}
            {this is not json}

            {"question": "Q2", "answer": "#### 7"}
            """);
        DatasetReader.Dataset d = DatasetReader.read(f, DatasetFormat.GSM8K, DatasetReader.Options.DEFAULT);
        assertEquals(2, d.examples().size());
        assertEquals("1003", d.examples().get(0).answer());
        assertEquals(PromptTemplate.LLM_ADAPTERS.prompt("Tom has 3 apples and buys 1,000 more. How many?", ""), d.examples().get(0).prompt());
        assertTrue(d.examples().get(0).response().endsWith("#### 1,003"));
        assertEquals(5, d.examples().get(1).line());
        assertEquals(2, d.malformed().size());
        assertEquals(2, d.malformed().get(0).line());
        assertTrue(d.malformed().get(0).reason().contains("####"));
        assertEquals(3, d.malformed().get(1).line());
        assertTrue(d.malformed().get(1).reason().startsWith("invalid JSON"));
        // auto-detection picks GSM8K too
        assertEquals(DatasetFormat.GSM8K, DatasetReader.read(f, null, DatasetReader.Options.DEFAULT).format());

        Path t = file("text.jsonl", "\n\n{\"body\": \"hello world\"}\n{\"body\": 5}\n{\"text\": \"wrong field\"}\n");
        DatasetReader.Dataset td = DatasetReader.read(t, DatasetFormat.TEXT, new DatasetReader.Options(PromptTemplate.ALPACA, "body"));
        assertEquals(List.of(new Example("", "hello world", null, 3)), td.examples());
        assertEquals(List.of(4, 5), td.malformed().stream().map(DatasetReader.Malformed::line).toList());
    }

    @Test
    void unreadableFilesAreOneClearError() throws IOException {
        List<Path> bad = List.of(
                dir.resolve("missing.jsonl"),
                file("empty.jsonl", "\n  \n"),
                file("truncated.json", "[{\"instruction\": \"a\", \"output\": \"b\"},\n {\"instruction\": "),
                file("allbad.jsonl", "{\"x\": 1}\nnope\n"));
        List<String> expect = List.of("not found", "empty", "invalid JSON at line 2", "no usable records");
        for (int i = 0; i < bad.size(); i++) {
            Path f = bad.get(i);
            FormatException e = assertThrows(FormatException.class, () -> DatasetReader.read(f, null, DatasetReader.Options.DEFAULT));
            assertTrue(e.getMessage().startsWith(f.toString()) && e.getMessage().contains(expect.get(i)), e.getMessage());
            assertTrue(!e.getMessage().contains("\n"), e.getMessage());
        }
        Path latin1 = dir.resolve("latin1.jsonl");
        Files.write(latin1, new byte[] {'{', '"', 't', 'e', 'x', 't', '"', ':', '"', (byte) 0xE9, '"', '}', '\n'});
        FormatException e = assertThrows(FormatException.class, () -> DatasetReader.read(latin1, null, DatasetReader.Options.DEFAULT));
        assertTrue(e.getMessage().contains("UTF-8"), e.getMessage());
    }

    // ------------------------------------------------------------------ ids and batches

    @Test
    void tokenizeSplitsAtThePromptsLengthAndAppendsEos() {
        WordTokenizer tok = new WordTokenizer(-1);
        TokenizedExample t = ExampleTokenizer.tokenize(tok, new Example("Q: two plus two ?\nA:", " four", "4", 1));
        assertArrayEquals(new int[] {1, 10, 11, 12, 11, 13, 14}, t.prompt());
        assertArrayEquals(new int[] {15, 2}, t.response());
        TokenizedExample text = ExampleTokenizer.tokenize(tok, new Example("", "a b", null, 1));
        assertArrayEquals(new int[] {1}, text.prompt());
        assertArrayEquals(new int[] {16, 17, 2}, text.response());
    }

    static TokenizedExample ex(int[] prompt, int[] response) { return new TokenizedExample(prompt, response, null, 1); }

    @Test
    void batchIsLeftPaddedWithShiftedResponseOnlyTargets() {
        List<TokenizedExample> rows = List.of(
                ex(new int[] {1, 20, 21}, new int[] {30, 31, 2}),        // length 6
                ex(new int[] {1, 22}, new int[] {32, 2}));               // length 4
        Batcher b = new Batcher(rows, new Batcher.Options(2, 16, 0, false, false, false), 0, 1);
        Batch batch = b.next();
        assertEquals(2, batch.batch());
        assertEquals(6, batch.seqLen());
        int I = Batch.IGNORE;
        assertArrayEquals(new int[] {1, 20, 21, 30, 31, 2, /**/ 0, 0, 1, 22, 32, 2}, batch.tokens());
        // position n predicts token n+1, only where n+1 is a response token
        assertArrayEquals(new int[] {I, I, 30, 31, 2, I, /**/ I, I, I, 32, 2, I}, batch.targets());
        assertArrayEquals(new int[] {0, 1, 2, 3, 4, 5, /**/ 0, 0, 0, 1, 2, 3}, batch.positions());
        assertArrayEquals(new int[] {0, 2}, batch.keyStart());
        assertEquals(5, batch.outputTokenCount());
        // fixed length pads every batch to maxLen
        Batcher fixed = new Batcher(rows, new Batcher.Options(2, 8, 0, false, false, true), 7, 1);
        Batch fb = fixed.next();
        assertEquals(8, fb.seqLen());
        assertArrayEquals(new int[] {2, 4}, fb.keyStart());
        assertEquals(7, fb.tokens()[0]);
        // pad id: the tokenizer's pad, else EOS, else 0
        assertEquals(5, Batcher.padIdFor(new WordTokenizer(5)));
        assertEquals(2, Batcher.padIdFor(new WordTokenizer(-1)));
    }

    @Test
    void truncationKeepsBosAndTheEndOfTheResponse() {
        TokenizedExample long1 = ex(new int[] {1, 20, 21, 22, 23}, new int[] {30, 31, 2});
        Batcher b = new Batcher(List.of(long1), new Batcher.Options(1, 5, 0, false, false, false), 0, 1);
        Batch batch = b.next();
        // 8 tokens into 5: three prompt tokens after BOS go
        assertArrayEquals(new int[] {1, 23, 30, 31, 2}, batch.tokens());
        int I = Batch.IGNORE;
        assertArrayEquals(new int[] {I, 30, 31, 2, I}, batch.targets());
        assertEquals(1, b.truncatedRows());
        // a response longer than maxLen: BOS, then the response's tail
        TokenizedExample long2 = ex(new int[] {1, 20}, new int[] {30, 31, 32, 33, 34, 2});
        Batcher c = new Batcher(List.of(long2), new Batcher.Options(1, 4, 0, false, false, false), 0, 1);
        Batch cb = c.next();
        assertArrayEquals(new int[] {1, 33, 34, 2}, cb.tokens());
        assertArrayEquals(new int[] {33, 34, 2, I}, cb.targets());
    }

    @Test
    void seededShufflingAndResumeAreDeterministic() {
        List<TokenizedExample> rows = new ArrayList<>();
        for (int i = 0; i < 10; i++) rows.add(ex(new int[] {1}, new int[] {100 + i, 2}));
        Batcher.Options o = new Batcher.Options(3, 8, 42, true, false, false);
        Batcher a = new Batcher(rows, o, 0, 1);
        assertEquals(4, a.batchesPerEpoch());
        List<int[]> run = new ArrayList<>();
        List<Batcher.DataPosition> positions = new ArrayList<>();
        for (int i = 0; i < 10; i++) {
            positions.add(a.position());
            run.add(a.next().tokens());
        }
        // every epoch visits each record once; the last batch of an epoch is partial (10 = 3+3+3+1)
        Set<Integer> seen = new HashSet<>();
        for (int i = 0; i < 4; i++) for (int t : run.get(i)) if (t >= 100) seen.add(t);
        assertEquals(10, seen.size());
        assertEquals(1 * 3, run.get(3).length);
        assertEquals(new Batcher.DataPosition(1, 0), positions.get(4));
        // epochs differ, the same seed repeats, another seed differs
        assertNotEquals(Arrays.toString(a.order(0)), Arrays.toString(a.order(1)));
        assertArrayEquals(a.order(1), new Batcher(rows, o, 0, 1).order(1));
        assertNotEquals(Arrays.toString(a.order(0)),
                Arrays.toString(new Batcher(rows, new Batcher.Options(3, 8, 43, true, false, false), 0, 1).order(0)));
        // resuming at a saved position reproduces the rest of the run
        Batcher resumed = new Batcher(rows, o, 0, 1);
        resumed.seek(positions.get(6));
        for (int i = 6; i < 10; i++) assertArrayEquals(run.get(i), resumed.next().tokens(), "batch " + i);
        // dropLast skips the partial batch; no shuffle keeps file order
        Batcher d = new Batcher(rows, new Batcher.Options(3, 8, 0, false, true, false), 0, 1);
        assertEquals(3, d.batchesPerEpoch());
        d.next(); d.next(); d.next();
        assertEquals(100, d.next().tokens()[1]);
        assertThrows(IllegalArgumentException.class, () -> d.seek(new Batcher.DataPosition(0, 9)));
    }
}
