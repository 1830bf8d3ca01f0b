package org.sparselora.engine.data;

/**
 * A record as token ids: {@code prompt} (BOS and prompt text, no loss) and {@code response}
 * (response text then EOS, loss on every token). The model reads prompt ++ response.
 */
public record TokenizedExample(int[] prompt, int[] response, String answer, int line) {
    public int length() { return prompt.length + response.length; }
}
