package org.sparselora.engine.golden;

import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.generate.Generator;
import org.sparselora.engine.io.Llama2cCheckpoint;
import org.sparselora.engine.io.SharedData;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.tokenizer.Tokenizers;

/** stories260K + its tok512 tokenizer: 200 greedy steps from BOS decode to llama2.c's expected story. */
@Tag("shared-data")
class Stories260KTextTest {
    @Test
    void greedyStoryTextMatchesLlama2c() {
        try (CpuBackend be = new CpuBackend();
             Llama2cCheckpoint ck = Llama2cCheckpoint.open(SharedData.file("models/stories260K/stories260K.bin"));
             Tokenizer tok = Tokenizers.load(SharedData.file("tokenizers/llama2c-tok512/tok512.bin"))) {
            LlamaModel m = new LlamaModel(be, LlamaWeights.upload(be, ck));
            int[] ids = new Generator(m, null).generate(new int[] {tok.bosId()}, Generator.Options.greedy(200, -1));
            String text = tok.decode(ids);
            String expected = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
                    + "One day, she saw a big, red ball.";
            assertTrue(text.startsWith(expected), "generated: " + text);
        }
    }
}
