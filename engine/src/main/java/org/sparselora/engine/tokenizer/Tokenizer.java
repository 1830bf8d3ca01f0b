package org.sparselora.engine.tokenizer;

/**
 * Text ⇄ token ids for a model. {@link #encode} with {@code addSpecial} gives exactly what HF
 * {@code tokenizer(text)["input_ids"]} gives (the post-processor's BOS etc.), or, for llama2.c
 * vocabularies, what llama2.c's {@code encode(text, bos=1, eos=0)} gives.
 */
public interface Tokenizer extends AutoCloseable {

    /** Token ids of {@code text}; {@code addSpecial} adds the special tokens the format adds (BOS…). */
    int[] encode(String text, boolean addSpecial);

    /** The text of {@code ids} as a user should see it: special tokens (BOS, EOS, pad…) left out. */
    String decode(int[] ids);

    /**
     * One token's text, special tokens included. A byte-fallback or partial byte-level token is not
     * text on its own: streaming printers should decode the whole sequence and print the new suffix.
     */
    String decodeToken(int id);

    /** Id of the beginning-of-sequence token, or -1 if the tokenizer has none. */
    int bosId();

    /** Id of the end-of-sequence token, or -1 if none. */
    int eosId();

    /** Id of the padding token, or -1 if none. */
    int padId();

    /** Number of ids (largest id + 1), added tokens included. */
    int vocabSize();

    @Override
    default void close() {}
}
