package org.sparselora.actors.pipeline;

import java.util.Arrays;
import org.sparselora.engine.model.Batch;

/**
 * A batch into equal row blocks, in order: data parallelism's split of a global batch over the
 * workers, and gradient accumulation's split of a worker's shard into micro-batches.
 */
final class BatchShards {

    private BatchShards() {}

    /** Rows {@code [w·B/n, (w+1)·B/n)} for worker w; B must divide by n (JobSpecs checks batch_size % workers). */
    static Batch[] split(Batch b, int n) {
        if (b.batch() % n != 0) throw new IllegalStateException("batch of " + b.batch() + " rows does not split into " + n + " equal blocks");
        if (n == 1) return new Batch[]{b};
        int rows = b.batch() / n, t = b.seqLen();
        Batch[] out = new Batch[n];
        for (int w = 0; w < n; w++) {
            int from = w * rows * t, to = from + rows * t;
            out[w] = new Batch(rows, t, Arrays.copyOfRange(b.tokens(), from, to), Arrays.copyOfRange(b.targets(), from, to),
                    Arrays.copyOfRange(b.positions(), from, to), Arrays.copyOfRange(b.keyStart(), w * rows, (w + 1) * rows));
        }
        return out;
    }
}
