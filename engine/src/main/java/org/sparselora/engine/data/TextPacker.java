package org.sparselora.engine.data;

import java.util.Arrays;
import java.util.List;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.model.Batch;

/**
 * Pretraining batches from plain-text documents ({@code format: text}): every document is encoded
 * with the tokenizer's special tokens (its BOS, if it adds one) and followed by EOS, the documents
 * are concatenated in file order into one token stream, and the stream is cut into sequences of
 * exactly {@code seqLen} tokens. Sequence i reads {@code stream[i·L, i·L+L)} and predicts
 * {@code stream[i·L+1, i·L+L+1)}: every position carries loss (the last one's target is the first
 * token of the next sequence), there is no padding, every row has the same shape.
 *
 * <p><b>The tail</b>: the last {@code (stream length − 1) mod seqLen} tokens, too few for a full
 * sequence, are dropped — at most one sequence's worth of the corpus; keeping them would mean
 * padding and a batch shape of its own. <b>Document boundaries</b>: a sequence may hold the end of
 * one document, its EOS and the start of the next; attention is causal over the whole row (the
 * usual GPT/Llama packing), the EOS tells the model that a new document starts.
 *
 * <p><b>Order and resume</b>: epoch e visits the sequences in {@link Batcher#permutation}(count,
 * seed, e) (or in stream order without shuffling) in batches of {@code batchSize} sequences; an
 * epoch's last partial batch is skipped so every batch has the same shape. The next batch is named
 * by a {@link Batcher.DataPosition} {@code (epoch, batch)}; {@link #seek} to a saved position
 * continues with exactly the batches an uninterrupted run would have produced.
 */
public final class TextPacker {

    public record Options(int batchSize, int seqLen, long seed, boolean shuffle) {
        public Options {
            if (batchSize <= 0) throw new IllegalArgumentException("batch size must be positive, got " + batchSize);
            if (seqLen < 1) throw new IllegalArgumentException("sequence length must be at least 1, got " + seqLen);
        }
    }

    private final int[] stream;
    private final int sequences;
    private final Options options;
    private final int documents;
    private int epoch, batch;
    private int[] order;
    private int orderEpoch = -1;

    /**
     * @param docs token ids of each document, already with the separator the caller wants after it
     *             (see {@link #tokenize})
     */
    public TextPacker(List<int[]> docs, Options options) {
        this.options = options;
        this.documents = docs.size();
        long total = 0;
        for (int[] d : docs) total += d.length;
        if (total > Integer.MAX_VALUE - 8) throw new IllegalArgumentException("the corpus has " + total + " tokens; at most " + (Integer.MAX_VALUE - 8) + " fit one packed stream");
        stream = new int[(int) total];
        int k = 0;
        for (int[] d : docs) {
            System.arraycopy(d, 0, stream, k, d.length);
            k += d.length;
        }
        sequences = stream.length > 0 ? (stream.length - 1) / options.seqLen : 0;
        if (sequences < options.batchSize)
            throw new IllegalArgumentException("the text has " + stream.length + " tokens in " + documents + " document(s): "
                    + sequences + " sequence(s) of " + options.seqLen + " tokens, fewer than one batch of " + options.batchSize);
    }

    /** Each document's text encoded with the tokenizer's special tokens, then its EOS (when it has one). */
    public static List<int[]> tokenize(Tokenizer tok, List<Example> docs) {
        int eos = tok.eosId();
        return docs.stream().map(e -> {
            int[] ids = tok.encode(e.prompt() + e.response(), true);
            if (eos < 0) return ids;
            int[] out = Arrays.copyOf(ids, ids.length + 1);
            out[ids.length] = eos;
            return out;
        }).toList();
    }

    public TextPacker(Tokenizer tok, List<Example> docs, Options options) {
        this(tokenize(tok, docs), options);
    }

    /** Tokens in the packed stream (EOS separators included). */
    public int streamTokens() { return stream.length; }

    /** Full sequences cut from the stream. */
    public int sequenceCount() { return sequences; }

    /** Tokens of the stream that no sequence reads or predicts (the dropped tail). */
    public int droppedTokens() { return stream.length - sequences * options.seqLen - 1; }

    public int documentCount() { return documents; }

    public int batchesPerEpoch() { return sequences / options.batchSize; }

    public Batcher.DataPosition position() { return new Batcher.DataPosition(epoch, batch); }

    public void seek(Batcher.DataPosition p) {
        if (p.epoch() < 0 || p.batch() < 0 || p.batch() > batchesPerEpoch())
            throw new IllegalArgumentException("data position " + p + " out of range (" + batchesPerEpoch() + " batches per epoch)");
        epoch = p.epoch();
        batch = p.batch();
        if (batch >= batchesPerEpoch()) { epoch++; batch = 0; }
    }

    /** Sequence indices of epoch e in visiting order. */
    public int[] order(int e) {
        if (orderEpoch != e) {
            if (options.shuffle) order = Batcher.permutation(sequences, options.seed, e);
            else {
                order = new int[sequences];
                for (int i = 0; i < sequences; i++) order[i] = i;
            }
            orderEpoch = e;
        }
        return order;
    }

    /** The batch at the current position, then advances. */
    public Batch next() {
        int[] ord = order(epoch);
        int b = options.batchSize, t = options.seqLen;
        int[] tokens = new int[b * t], targets = new int[b * t], positions = new int[b * t];
        for (int r = 0; r < b; r++) {
            int start = ord[batch * b + r] * t;
            System.arraycopy(stream, start, tokens, r * t, t);
            System.arraycopy(stream, start + 1, targets, r * t, t);
            for (int j = 0; j < t; j++) positions[r * t + j] = j;
        }
        batch++;
        if (batch >= batchesPerEpoch()) { epoch++; batch = 0; }
        return new Batch(b, t, tokens, targets, positions, new int[b]);
    }
}
