package org.sparselora.actors.demo;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.EnumSet;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.data.Batcher;
import org.sparselora.engine.data.Example;
import org.sparselora.engine.data.ExampleTokenizer;
import org.sparselora.engine.io.AdapterFiles;
import org.sparselora.engine.io.HfCheckpoint;
import org.sparselora.engine.io.LoraSpec;
import org.sparselora.engine.io.PeftAdapter;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.tokenizer.Tokenizers;
import org.sparselora.engine.train.LoraTrainer;
import org.sparselora.engine.train.OptimizerConfig;

/**
 * The demo's claim at a smaller scale (the demo's base recipe, 60 LoRA steps of 16 words, q,k,v,o as the
 * demo's jobs): a fresh adapter takes the held-out SHIFT exact match from 0 to well above it, measured by
 * {@link DemoEval} on the adapter written as PEFT files and read back, with the data tokenized by
 * the base directory's HF tokenizer.json (what the job path uses); and that exact match, computed
 * in one batched pass, agrees with greedy decoding example by example. The full demo (80
 * steps of 32) reaches ~1.0.
 */
class DemoLearningTest {

    @TempDir Path dir;

    /** Token-by-token greedy decoding with the KV cache, up to EOS or {@code max} tokens. */
    static String greedyAnswer(LlamaModel model, LoraAdapter lora, String prompt, int max) {
        CharTokenizer tok = new CharTokenizer();
        try (LlamaModel.KvCache cache = model.newKvCache(DemoModel.SEQ_LEN + max)) {
            int[] ids = tok.encode(prompt, true);
            float[] logits = model.forwardCached(ids, 0, cache, lora);
            StringBuilder out = new StringBuilder();
            for (int pos = ids.length, i = 0; i < max; i++) {
                int next = DemoModel.argmax(logits, 0, logits.length);
                if (next == tok.eosId()) break;
                out.append(tok.decodeToken(next));
                logits = model.forwardCached(new int[] {next}, pos++, cache, lora);
            }
            return out.toString();
        }
    }

    @Test
    void exactMatchRisesAfterFineTuning() {
        try (CpuBackend be = new CpuBackend()) {
            Path base = DemoModel.baseCheckpoint(dir.resolve("cache"), DemoModel.Recipe.DEFAULT, be, s -> { });
            List<Example> held = DemoTask.examples(DemoTask.Kind.SHIFT, 64, 5, true);
            DemoEval.Score before;
            try (DemoEval ev = new DemoEval(be, base)) {
                before = ev.score(null, held);
            }
            assertEquals(0.0, before.exactMatch(), "the COPY base model should not already do SHIFT");

            LoraConfig lc = new LoraConfig(16, 32f, 0f, EnumSet.of(Projection.Q, Projection.K, Projection.V, Projection.O), false, 42);
            Path adapterDir = dir.resolve("adapter");
            try (HfCheckpoint src = HfCheckpoint.open(base); LlamaWeights w = LlamaWeights.upload(be, src);
                 LoraAdapter lora = new LoraAdapter(be, src.config(), lc); Tokenizer tok = Tokenizers.load(base)) {
                LlamaModel model = new LlamaModel(be, w);
                Batcher batcher = new Batcher(ExampleTokenizer.tokenizeAll(tok, DemoTask.examples(DemoTask.Kind.SHIFT, 1024, 42, false)),
                        new Batcher.Options(16, DemoModel.SEQ_LEN, 42, true, true, false), tok);
                int steps = 60;
                LoraTrainer tr = new LoraTrainer(model, lora,
                        new OptimizerConfig(2e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1f, OptimizerConfig.Schedule.COSINE, 2, steps));
                for (int s = 0; s < steps; s++) {
                    var r = tr.computeGradients(batcher.next(), s, false);
                    tr.applyUpdate(s, r.outputTokens());
                }
                List<String> modules = lc.orderedTargets().stream().map(p -> p.hfName).toList();
                var shapes = new java.util.HashMap<String, int[]>();
                for (int l = 0; l < src.config().numLayers(); l++)
                    for (Projection p : lc.orderedTargets()) {
                        shapes.put(LoraAdapter.name(l, p, "A"), lora.get(l, p).a().shape());
                        shapes.put(LoraAdapter.name(l, p, "B"), lora.get(l, p).b().shape());
                    }
                PeftAdapter.write(adapterDir, new AdapterFiles(new LoraSpec(16, 32f, 0f, modules, false, base.toString()), lora.toHost(), shapes));
            }
            DemoEval.Score after;
            try (DemoEval ev = new DemoEval(be, base)) {
                after = ev.score(adapterDir, held);
            }
            assertTrue(after.exactMatch() >= 0.3, "exact match after 60 steps: " + after.exactMatch());
            assertTrue(after.evalLoss() < before.evalLoss() / 2, before + " -> " + after);

            // the batched, teacher-forced exact match is greedy decoding's, example by example
            try (HfCheckpoint src = HfCheckpoint.open(base); LlamaWeights w = LlamaWeights.upload(be, src);
                 LoraAdapter lora = LoraAdapter.fromPeft(be, src.config(), PeftAdapter.read(adapterDir), adapterDir)) {
                LlamaModel model = new LlamaModel(be, w);
                int right = 0, wrong = 0;
                for (LoraAdapter withOrWithout : java.util.Arrays.asList(lora, null)) // the base model: every answer wrong
                    for (Example e : held) {
                        boolean greedy = greedyAnswer(model, withOrWithout, e.prompt(), e.answer().length() + 1).equals(e.answer());
                        boolean batched = DemoModel.score(model, withOrWithout, List.of(e)).exactMatch() == 1.0;
                        assertEquals(greedy, batched, "greedy decoding and the batched exact match disagree on " + e.prompt());
                        if (greedy) right++; else wrong++;
                    }
                assertEquals(after.exactMatch(), (double) right / held.size(), 1e-12);
                assertTrue(right > 0 && wrong > 0, right + " right, " + wrong + " wrong");
            }
        }
    }
}
