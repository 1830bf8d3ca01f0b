package org.sparselora.actors.pipeline;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.zip.CRC32;
import org.sparselora.engine.io.AtomicFiles;
import org.sparselora.engine.train.TrainerState;
import org.sparselora.proto.cluster.Checkpoint;
import org.sparselora.proto.cluster.DataPositionProto;
import org.sparselora.proto.cluster.FloatTensor;
import org.sparselora.proto.cluster.NamedTensor;

/**
 * The job's resumable checkpoint, {@code <output_dir>/checkpoint/checkpoint.pb}: the trainer's
 * {@link TrainerState} (LoRA mode: adapter + AdamW moments; full mode: the fp32 master of every
 * parameter under its HF name + {@code .exp_avg} + {@code .exp_avg_sq}), completed steps, data
 * position and RNG state, the job spec. One protobuf message, so the state must stay under
 * {@link #MAX_PAYLOAD} bytes (full mode: about 160M parameters at 12 bytes each); a larger one is
 * refused before anything is written. It is written through {@link AtomicFiles} (a fresh temp file
 * in the same directory, forced to disk, then renamed over the old one), so a crash at any instant
 * leaves either the previous complete checkpoint or the new complete one. The
 * file starts with "SLCK", a version, the payload length and its CRC-32, so a damaged file is
 * reported as such instead of being half-loaded.
 */
public final class CheckpointStore {

    public static final String FILE = "checkpoint.pb";
    private static final int MAGIC = 0x4B434C53; // "SLCK" little-endian
    private static final int VERSION = 1;
    private static final int HEADER = 4 + 4 + 8 + 8;

    /** Protobuf's limit on one message. */
    public static final long MAX_PAYLOAD = Integer.MAX_VALUE;

    private final Path dir;

    public CheckpointStore(Path outputDir) {
        this.dir = outputDir.resolve("checkpoint");
    }

    public Path file() { return dir.resolve(FILE); }

    public boolean exists() { return Files.exists(file()); }

    public void write(Checkpoint checkpoint) throws IOException {
        long values = 0;
        for (NamedTensor t : checkpoint.getTensorsList()) values += t.getData().getValuesCount();
        if (4 * values + (1 << 20) > MAX_PAYLOAD)
            throw new IOException("cannot checkpoint to " + file() + ": the trainer state has " + values + " values ("
                    + (4 * values >> 20) + " MiB), more than one checkpoint file holds (" + (MAX_PAYLOAD >> 20) + " MiB)");
        Files.createDirectories(dir);
        byte[] payload = checkpoint.toByteArray();
        CRC32 crc = new CRC32();
        crc.update(payload);
        ByteBuffer header = ByteBuffer.allocate(HEADER).order(ByteOrder.LITTLE_ENDIAN)
                .putInt(MAGIC).putInt(VERSION).putLong(payload.length).putLong(crc.getValue()).flip();
        AtomicFiles.write(file(), tmp -> {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
                while (header.hasRemaining()) ch.write(header);
                ByteBuffer body = ByteBuffer.wrap(payload);
                while (body.hasRemaining()) ch.write(body);
            }
        });
    }

    public Checkpoint read() throws IOException {
        Path f = file();
        if (!Files.exists(f)) throw new IOException(f + ": no checkpoint to resume from");
        byte[] all = Files.readAllBytes(f);
        if (all.length < HEADER) throw new IOException(f + ": truncated checkpoint (" + all.length + " bytes)");
        ByteBuffer b = ByteBuffer.wrap(all).order(ByteOrder.LITTLE_ENDIAN);
        if (b.getInt() != MAGIC) throw new IOException(f + ": not a SparseLoRA checkpoint (bad magic)");
        int version = b.getInt();
        if (version != VERSION) throw new IOException(f + ": checkpoint format version " + version + ", expected " + VERSION);
        long len = b.getLong();
        long crcWant = b.getLong();
        if (len != all.length - HEADER) throw new IOException(f + ": truncated checkpoint (payload " + (all.length - HEADER) + " of " + len + " bytes)");
        CRC32 crc = new CRC32();
        crc.update(all, HEADER, (int) len);
        if (crc.getValue() != crcWant) throw new IOException(f + ": checkpoint CRC mismatch (file damaged)");
        return Checkpoint.parseFrom(ByteBuffer.wrap(all, HEADER, (int) len));
    }

    /** Temp files a killed process left behind (never the checkpoint itself). */
    public void removeStaleTemps() throws IOException {
        AtomicFiles.removeStaleTemps(file());
        if (!Files.isDirectory(dir)) return;
        // the names an earlier version of this writer used
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, FILE + ".*.tmp")) {
            for (Path p : ds) Files.deleteIfExists(p);
        }
    }

    public static TrainerState toTrainerState(Checkpoint c) {
        LinkedHashMap<String, float[]> tensors = new LinkedHashMap<>();
        for (NamedTensor t : c.getTensorsList()) tensors.put(t.getName(), toArray(t.getData()));
        return new TrainerState(c.getTrainerStep(), tensors);
    }

    public static Checkpoint.Builder fromTrainerState(TrainerState s) {
        Checkpoint.Builder b = Checkpoint.newBuilder().setTrainerStep(s.step());
        for (Map.Entry<String, float[]> e : s.tensors().entrySet())
            b.addTensors(NamedTensor.newBuilder().setName(e.getKey()).setData(toProto(e.getValue())));
        return b;
    }

    public static DataPosition toPosition(DataPositionProto p) {
        return new DataPosition(p.getEpoch(), p.getOffset(), p.getRngState(), p.getBatches());
    }

    public static DataPositionProto toProto(DataPosition p) {
        return DataPositionProto.newBuilder().setEpoch(p.epoch()).setOffset(p.offset())
                .setRngState(p.rngState()).setBatches(p.batches()).build();
    }

    public static FloatTensor toProto(float[] a) {
        FloatTensor.Builder b = FloatTensor.newBuilder();
        for (float v : a) b.addValues(v);
        return b.build();
    }

    public static float[] toArray(FloatTensor t) {
        float[] a = new float[t.getValuesCount()];
        for (int i = 0; i < a.length; i++) a[i] = t.getValues(i);
        return a;
    }
}
