package org.sparselora.engine.eval;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.data.Example;
import org.sparselora.engine.generate.Generator;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.TinyModels;
import org.sparselora.engine.tokenizer.Tokenizer;

/**
 * Evaluation by generation in batches: every record's outcome equals generating it alone with
 * {@link Generator} (greedy, the record's own budget), whatever the batch size, skipped records
 * keep their place, and the accuracy counts the model's own answers.
 */
class GenerationEvalTest {
    static final CpuBackend be = new CpuBackend(2);

    @AfterAll
    static void close() { be.close(); }

    /** One letter per id: id i is the letter 'a' + i; BOS 1, EOS 2 (decoded as nothing). */
    static final class Letters implements Tokenizer {
        final int vocab;

        Letters(int vocab) { this.vocab = vocab; }

        @Override public int[] encode(String text, boolean addSpecial) {
            int[] ids = new int[text.length() + (addSpecial ? 1 : 0)];
            if (addSpecial) ids[0] = bosId();
            for (int i = 0; i < text.length(); i++) ids[i + (addSpecial ? 1 : 0)] = text.charAt(i) - 'a';
            return ids;
        }

        @Override public String decode(int[] ids) {
            StringBuilder s = new StringBuilder();
            for (int id : ids) s.append(decodeToken(id));
            return s.toString();
        }

        @Override public String decodeToken(int id) { return id == bosId() || id == eosId() ? "" : String.valueOf((char) ('a' + id)); }
        @Override public int bosId() { return 1; }
        @Override public int eosId() { return 2; }
        @Override public int padId() { return 0; }
        @Override public int vocabSize() { return vocab; }
    }

    @Test
    void batchedRecordsAreTheOneAtATimeAnswers() {
        LlamaConfig c = TinyModels.config(false, true, true);
        LlamaModel m = TinyModels.model(be, c, 21);
        LoraAdapter lora = TinyModels.adapter(be, c, 0f, 7);
        Letters tok = new Letters(c.vocabSize());
        List<String> prompts = List.of("dhe", "f", "ghijklm", "kd", "ej", "hhhh", "a");
        // the expected answer of even records is the model's own greedy answer (alone), odd ones a wrong one
        List<Example> records = new ArrayList<>();
        int maxNew = 6;
        for (int i = 0; i < prompts.size(); i++) {
            int[] p = tok.encode(prompts.get(i), true);
            String alone = tok.decode(new Generator(m, lora).generate(p, Generator.Options.greedy(maxNew, tok.eosId()))).trim();
            records.add(new Example(prompts.get(i), null, i % 2 == 0 ? alone : alone + "zz", i + 1));
        }
        records.add(3, new Example("dd", null, null, 99)); // no expected answer: skipped in its place
        for (int bs : new int[] {1, 3, 8}) {
            List<GenerationEval.Record> seen = new ArrayList<>();
            GenerationEval.Summary s = new GenerationEval(m, lora, tok, EvalTask.EXACT, maxNew, bs).evaluateAll(records, seen::add);
            assertEquals(s.details(), seen, "records are handed over in order");
            assertEquals(8, s.records());
            assertEquals(1, s.skipped());
            assertEquals(7, s.evaluated());
            assertEquals(4, s.correct(), "batch size " + bs);
            assertEquals(99, s.details().get(3).line());
            assertEquals("no expected answer", s.details().get(3).skipped());
            for (int i = 0; i < s.details().size(); i++) {
                GenerationEval.Record r = s.details().get(i);
                if (r.skipped() == null) assertEquals(r.line() % 2 == 1, r.correct(), "record at line " + r.line() + ", batch size " + bs);
            }
        }
        GenerationEval.Record one = new GenerationEval(m, lora, tok, EvalTask.EXACT, maxNew).evaluate(records.get(0));
        assertTrue(one.correct());
        assertNull(one.skipped());
        assertThrows(IllegalArgumentException.class, () -> new GenerationEval(m, lora, tok, EvalTask.EXACT, maxNew, 0));
    }
}
