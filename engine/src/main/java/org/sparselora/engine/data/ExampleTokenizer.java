package org.sparselora.engine.data;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.sparselora.engine.tokenizer.Tokenizer;

/**
 * Turns rendered records into ids the way LLM-Adapters does for {@code train_on_inputs=False}: the
 * full text (prompt + response) is encoded once with the tokenizer's special tokens, the prompt
 * alone is encoded the same way, and the first {@code len(prompt ids)} tokens of the full encoding
 * are the prompt. Encoding the two parts separately would tokenize the seam differently from what
 * the model reads at inference. EOS is appended to the response (when the tokenizer has one).
 */
public final class ExampleTokenizer {

    private ExampleTokenizer() {}

    public static TokenizedExample tokenize(Tokenizer tok, Example e) {
        int[] full = tok.encode(e.prompt() + e.response(), true);
        int p = Math.min(tok.encode(e.prompt(), true).length, full.length);
        int[] prompt = Arrays.copyOfRange(full, 0, p);
        int eos = tok.eosId();
        int[] response = Arrays.copyOfRange(full, p, full.length + (eos >= 0 ? 1 : 0));
        if (eos >= 0) response[response.length - 1] = eos;
        return new TokenizedExample(prompt, response, e.answer(), e.line());
    }

    public static List<TokenizedExample> tokenizeAll(Tokenizer tok, List<Example> examples) {
        List<TokenizedExample> out = new ArrayList<>(examples.size());
        for (Example e : examples) out.add(tokenize(tok, e));
        return out;
    }
}
