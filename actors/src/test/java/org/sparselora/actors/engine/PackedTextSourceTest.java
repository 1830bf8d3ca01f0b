package org.sparselora.actors.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.pipeline.DataPosition;
import org.sparselora.actors.pipeline.DataSummary;
import org.sparselora.engine.data.DatasetFormat;
import org.sparselora.engine.data.DatasetReader;
import org.sparselora.engine.data.TextPacker;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.model.Batch;

/** The packed text source: summary of the file, and a saved position that continues the exact batch sequence. */
class PackedTextSourceTest {

    @TempDir Path dir;

    /** One id per character (BOS 1, EOS 2, characters from 3). */
    static final Tokenizer CHARS = new Tokenizer() {
        @Override public int[] encode(String text, boolean addSpecial) {
            int[] out = new int[text.length() + (addSpecial ? 1 : 0)];
            int k = 0;
            if (addSpecial) out[k++] = 1;
            for (char ch : text.toCharArray()) out[k++] = 3 + (ch & 0x7f);
            return out;
        }
        @Override public String decode(int[] ids) { return ""; }
        @Override public String decodeToken(int id) { return ""; }
        @Override public int bosId() { return 1; }
        @Override public int eosId() { return 2; }
        @Override public int padId() { return -1; }
        @Override public int vocabSize() { return 131; }
    };

    PackedTextSource source(Path file) {
        DatasetReader.Dataset ds = DatasetReader.read(file, DatasetFormat.TEXT, DatasetReader.Options.DEFAULT);
        return new PackedTextSource(new TextPacker(CHARS, ds.examples(), new TextPacker.Options(2, 8, 3, true)), ds, null);
    }

    @Test
    void resumesWithTheSameBatches() throws Exception {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < 20; i++) b.append("{\"text\": \"document number ").append(i).append(" says hello\"}\n");
        b.append("not json\n");
        Path f = Files.writeString(dir.resolve("t.jsonl"), b.toString());
        PackedTextSource a = source(f);
        DataSummary s = a.open();
        assertEquals(20, s.records());
        assertEquals(1, s.malformed());
        assertTrue(s.malformedLines().get(0).contains("line 21"), s.malformedLines().toString());
        List<int[]> run = new ArrayList<>();
        DataPosition saved = null;
        for (int i = 0; i < 50; i++) {   // several epochs
            if (i == 23) saved = a.position();
            Batch x = a.next();
            assertEquals(16, x.outputTokenCount(), "loss on every token");
            run.add(x.tokens());
        }
        assertEquals(23, saved.batches());
        PackedTextSource c = source(f);
        c.open();
        c.seek(saved);
        for (int i = 23; i < 50; i++) assertArrayEquals(run.get(i), c.next().tokens(), "batch " + i);
        assertEquals(50, c.position().batches());
    }

    /** A full-mode job opens with the model export in place of the adapter and no sparsity predictor. */
    @Test
    void fullModeJobsExportTheModelAndBuildNoPredictor() throws Exception {
        var spec = org.sparselora.actors.job.JobSpecs.prepare(org.sparselora.proto.control.JobSpec.newBuilder()
                .setModel("random:tiny-1m").setMode("full").setSteps(2).setBatchSize(1).setSeqLen(8).setOutputDir(dir.toString())
                .setData(org.sparselora.proto.control.DataSpec.newBuilder().setSynthetic(
                        org.sparselora.proto.control.SyntheticData.newBuilder().setBatch(1).setSeq(8).setOutputTokens(8))).build());
        try (var rt = new LlamaEngineProvider().open(spec)) {
            assertEquals("model", rt.exporter().directory(), "full mode exports the model, not an adapter");
            assertEquals(null, rt.predictor());
        }
    }
}
