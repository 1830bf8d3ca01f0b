package org.sparselora.actors.engine;

import java.util.ArrayList;
import java.util.List;
import org.sparselora.actors.pipeline.BatchSource;
import org.sparselora.actors.pipeline.DataPosition;
import org.sparselora.actors.pipeline.DataSummary;
import org.sparselora.engine.data.Batcher;
import org.sparselora.engine.data.DatasetReader;
import org.sparselora.engine.data.TextPacker;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.model.Batch;

/**
 * A {@code format: text} data set packed for pretraining ({@link TextPacker}: documents joined with
 * EOS, cut into full {@code seq_len} rows, loss on every token) as the DataLoader's source. Its
 * position is the packer's (epoch, batch): the row order is a function of (seed, epoch), so a
 * resumed or restarted job continues with exactly the batches an uninterrupted one reads. Closing
 * it releases the base weights, as the other sources do.
 */
final class PackedTextSource implements BatchSource {
    private final TextPacker packer;
    private final DatasetReader.Dataset ds;
    private final WeightSource weights;
    private long batches;

    PackedTextSource(TextPacker packer, DatasetReader.Dataset ds, WeightSource weights) {
        this.packer = packer;
        this.ds = ds;
        this.weights = weights;
    }

    @Override
    public DataSummary open() {
        List<String> lines = new ArrayList<>();
        for (DatasetReader.Malformed m : ds.malformed()) lines.add(ds.file().getFileName() + " line " + m.line() + ": " + m.reason());
        return new DataSummary(ds.examples().size(), ds.malformed().size(), lines);
    }

    @Override
    public Batch next() {
        batches++;
        return packer.next();
    }

    @Override
    public DataPosition position() {
        Batcher.DataPosition p = packer.position();
        return new DataPosition(p.epoch(), p.batch(), 0, batches);
    }

    @Override
    public void seek(DataPosition p) {
        packer.seek(new Batcher.DataPosition((int) p.epoch(), (int) p.offset()));
        batches = p.batches();
    }

    @Override
    public void close() { if (weights != null) weights.close(); }
}
