package org.sparselora.actors.testengine;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import org.sparselora.actors.pipeline.BatchSource;
import org.sparselora.actors.pipeline.DataPosition;
import org.sparselora.actors.pipeline.DataSummary;
import org.sparselora.engine.model.Batch;

/**
 * Test data: sequences from a fixed Markov chain (token a is followed by (3a+1) mod V most of the
 * time), left-padded and with a 2-token prompt that carries no loss, like real instruction data.
 * An epoch is {@code records} sequences, reshuffled per epoch with the seed; the position is
 * (epoch, offset), so seek reproduces the exact batch sequence.
 */
public final class MarkovSource implements BatchSource {

    private final int vocab, seqLen, batchSize, records, malformed;
    private final long seed;
    public final AtomicInteger nextCalls = new AtomicInteger();
    public volatile long delayMs;
    private long epoch, offset, batches;
    private int[] perm;

    public MarkovSource(int vocab, int seqLen, int batchSize, int records, int malformed, long seed) {
        this.vocab = vocab;
        this.seqLen = seqLen;
        this.batchSize = batchSize;
        this.records = records;
        this.malformed = malformed;
        this.seed = seed;
        shuffle();
    }

    @Override
    public DataSummary open() {
        List<String> lines = new ArrayList<>();
        for (int i = 0; i < malformed; i++) lines.add("line " + (7 * i + 3) + ": missing 'output'");
        return new DataSummary(records, malformed, lines);
    }

    @Override
    public Batch next() throws InterruptedException {
        nextCalls.incrementAndGet();
        if (delayMs > 0) Thread.sleep(delayMs);
        int n = batchSize * seqLen;
        int[] tokens = new int[n], targets = new int[n], positions = new int[n], keyStart = new int[batchSize];
        for (int s = 0; s < batchSize; s++) {
            if (offset == records) {
                epoch++;
                offset = 0;
                shuffle();
            }
            int idx = perm[(int) offset++];
            int[] seq = sequence(idx);
            int pad = idx % 3;
            keyStart[s] = pad;
            for (int t = 0; t < seqLen; t++) {
                int at = s * seqLen + t;
                if (t < pad) {
                    tokens[at] = 0;
                    targets[at] = Batch.IGNORE;
                    continue;
                }
                tokens[at] = seq[t - pad];
                positions[at] = t - pad;
                boolean prompt = t - pad < 1;
                targets[at] = t + 1 < seqLen && !prompt ? seq[t - pad + 1] : Batch.IGNORE;
            }
        }
        batches++;
        return new Batch(batchSize, seqLen, tokens, targets, positions, keyStart);
    }

    /** {@link #next()} for tests (the data never throws). */
    public Batch next0() {
        try {
            return next();
        } catch (InterruptedException e) {
            throw new IllegalStateException(e);
        }
    }

    private int[] sequence(int idx) {
        Random r = new Random(seed * 1_000_003L + idx);
        int[] seq = new int[seqLen];
        seq[0] = r.nextInt(vocab);
        for (int t = 1; t < seqLen; t++) seq[t] = r.nextDouble() < 0.8 ? (3 * seq[t - 1] + 1) % vocab : r.nextInt(vocab);
        return seq;
    }

    private void shuffle() {
        perm = new int[records];
        for (int i = 0; i < records; i++) perm[i] = i;
        Random r = new Random(seed + 31 * epoch);
        for (int i = records - 1; i > 0; i--) {
            int j = r.nextInt(i + 1), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
    }

    @Override
    public DataPosition position() { return new DataPosition(epoch, offset, seed + 31 * epoch, batches); }

    @Override
    public void seek(DataPosition p) {
        epoch = p.epoch();
        offset = p.offset();
        batches = p.batches();
        shuffle();
    }
}
