package org.sparselora.engine.data;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.model.Batch;

/**
 * Cuts tokenized records into {@link Batch}es, epoch after epoch, in a seeded order.
 *
 * <p>Each row is prompt ++ response, <b>left</b>-padded to the batch's length with the pad id;
 * {@code targets[n]} is the next token where that token belongs to the response (loss on the
 * response only, EOS included) and -100 on prompt, padding and the last position;
 * {@code positions} count from 0 at the row's first real token and {@code keyStart} is the number of
 * pad tokens, so attention never looks at padding.
 *
 * <p><b>Truncation policy</b> (rows longer than {@code maxLen}): the end of the response is what
 * carries the answer and EOS, so it is always kept. Tokens are dropped from the front: first from
 * the prompt just after its leading BOS (kept, so the model still sees a sequence start), then, if
 * the response alone is too long, from the front of the response. {@link #truncatedRows()} counts
 * the rows this touched.
 *
 * <p><b>Order and resume</b>: epoch {@code e} visits the records in a permutation drawn from
 * {@code (seed, e)} alone (SplitMix64 + Fisher–Yates, identical on every JVM), and the next batch is
 * identified by a {@link DataPosition} {@code (epoch, batch index)}. Restoring a saved position with
 * {@link #seek} continues with exactly the batches an uninterrupted run would have produced.
 */
public final class Batcher {

    /**
     * @param fixedLength pad every batch to {@code maxLen} (static shapes, e.g. for a GPU) instead of
     *                    to its longest row
     * @param dropLast    skip an epoch's last batch when it would have fewer than {@code batchSize} rows
     */
    public record Options(int batchSize, int maxLen, long seed, boolean shuffle, boolean dropLast, boolean fixedLength) {
        public Options {
            if (batchSize <= 0) throw new IllegalArgumentException("batch size must be positive, got " + batchSize);
            if (maxLen < 2) throw new IllegalArgumentException("max length must be at least 2, got " + maxLen);
        }
    }

    /** Where the next batch starts: epoch and batch index within it. */
    public record DataPosition(int epoch, int batch) {}

    private final List<TokenizedExample> examples;
    private final Options options;
    private final int padId;
    private final int bosId;
    private int epoch;
    private int batch;
    private int[] order;
    private int orderEpoch = -1;
    private long truncatedRows;

    /** {@code padId} as from {@link #padIdFor}; {@code bosId} -1 if the tokenizer has none. */
    public Batcher(List<TokenizedExample> examples, Options options, int padId, int bosId) {
        if (examples.isEmpty()) throw new IllegalArgumentException("no examples to batch");
        if (options.dropLast && examples.size() < options.batchSize)
            throw new IllegalArgumentException("only " + examples.size() + " examples for batches of " + options.batchSize
                    + " with dropLast: no batch would ever be produced");
        this.examples = List.copyOf(examples);
        this.options = options;
        this.padId = padId;
        this.bosId = bosId;
    }

    public Batcher(List<TokenizedExample> examples, Options options, Tokenizer tok) {
        this(examples, options, padIdFor(tok), tok.bosId());
    }

    /** The tokenizer's pad id, else its EOS (masked anyway), else 0. */
    public static int padIdFor(Tokenizer tok) {
        if (tok.padId() >= 0) return tok.padId();
        if (tok.eosId() >= 0) return tok.eosId();
        return 0;
    }

    public int batchesPerEpoch() {
        int n = examples.size(), b = options.batchSize;
        return options.dropLast ? n / b : (n + b - 1) / b;
    }

    public DataPosition position() { return new DataPosition(epoch, batch); }

    public void seek(DataPosition p) {
        if (p.epoch() < 0 || p.batch() < 0 || p.batch() > batchesPerEpoch())
            throw new IllegalArgumentException("data position " + p + " out of range (" + batchesPerEpoch() + " batches per epoch)");
        epoch = p.epoch();
        batch = p.batch();
        normalize();
    }

    /** The end of an epoch is the start of the next: one canonical position per batch. */
    private void normalize() {
        if (batch >= batchesPerEpoch()) {
            epoch++;
            batch = 0;
        }
    }

    /** Rows in the order of the current position's epoch, then advances. */
    public Batch next() {
        int[] ord = order(epoch);
        int from = batch * options.batchSize;
        int to = Math.min(from + options.batchSize, ord.length);
        List<TokenizedExample> rows = new ArrayList<>(to - from);
        for (int i = from; i < to; i++) rows.add(examples.get(ord[i]));
        batch++;
        normalize();
        return build(rows);
    }

    /** Record indices of epoch {@code e} in visiting order. */
    public int[] order(int e) {
        if (orderEpoch == e) return order;
        order = options.shuffle ? permutation(examples.size(), options.seed, e) : identity(examples.size());
        orderEpoch = e;
        return order;
    }

    /**
     * The visiting order of epoch {@code e} of {@code n} items: a permutation drawn from
     * {@code (seed, e)} alone (SplitMix64 + Fisher–Yates), identical on every JVM. Shared by every
     * batcher so that one seed means one data order.
     */
    public static int[] permutation(int n, long seed, int e) {
        int[] ord = identity(n);
        long state = seed ^ (0x9E3779B97F4A7C15L * (e + 1));
        for (int i = n - 1; i > 0; i--) {
            state += 0x9E3779B97F4A7C15L;
            int j = (int) Long.remainderUnsigned(mix(state), i + 1);
            int t = ord[i]; ord[i] = ord[j]; ord[j] = t;
        }
        return ord;
    }

    private static int[] identity(int n) {
        int[] ord = new int[n];
        for (int i = 0; i < n; i++) ord[i] = i;
        return ord;
    }

    private static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    public long truncatedRows() { return truncatedRows; }

    /** Builds one batch from these rows (the policy in the class comment). */
    public Batch build(List<TokenizedExample> rows) {
        int b = rows.size();
        int[][] seqs = new int[b][];
        int[] promptLens = new int[b];
        int longest = 0;
        for (int r = 0; r < b; r++) {
            TokenizedExample ex = rows.get(r);
            int[] prompt = ex.prompt(), resp = ex.response();
            int len = prompt.length + resp.length;
            int excess = len - options.maxLen;
            if (excess > 0) {
                truncatedRows++;
                int keepHead = (prompt.length > 0 && bosId >= 0 && prompt[0] == bosId) ? 1 : 0;
                int fromPrompt = Math.min(excess, prompt.length - keepHead);
                int fromResp = excess - fromPrompt;
                int[] seq = new int[options.maxLen];
                int k = 0;
                for (int i = 0; i < keepHead; i++) seq[k++] = prompt[i];
                for (int i = keepHead + fromPrompt; i < prompt.length; i++) seq[k++] = prompt[i];
                int pl = k;
                for (int i = fromResp; i < resp.length; i++) seq[k++] = resp[i];
                seqs[r] = Arrays.copyOf(seq, k);
                promptLens[r] = pl;
            } else {
                int[] seq = Arrays.copyOf(prompt, len);
                System.arraycopy(resp, 0, seq, prompt.length, resp.length);
                seqs[r] = seq;
                promptLens[r] = prompt.length;
            }
            longest = Math.max(longest, seqs[r].length);
        }
        int t = options.fixedLength ? options.maxLen : longest;
        int[] tokens = new int[b * t], targets = new int[b * t], positions = new int[b * t], keyStart = new int[b];
        Arrays.fill(tokens, padId);
        Arrays.fill(targets, Batch.IGNORE);
        for (int r = 0; r < b; r++) {
            int[] s = seqs[r];
            int pad = t - s.length;
            keyStart[r] = pad;
            int base = r * t + pad;
            for (int j = 0; j < s.length; j++) {
                tokens[base + j] = s[j];
                positions[base + j] = j;
                if (j + 1 < s.length && j + 1 >= promptLens[r]) targets[base + j] = s[j + 1];
            }
        }
        return new Batch(b, t, tokens, targets, positions, keyStart);
    }
}
