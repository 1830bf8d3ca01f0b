package org.sparselora.engine.sparse;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.OutputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.io.HostTensor;

/**
 * The safetensors container for the SVD predictor cache: an 8-byte little-endian header length,
 * a JSON header ({@code name → {dtype, shape, data_offsets}} plus {@code __metadata__} strings),
 * then the raw tensor bytes. Kept to what the cache needs (F32/BF16/F16, whole-file read) until the
 * project-wide {@code io.Safetensors} lands; the API mirrors it so the swap is one line per call.
 */
final class PredictorCacheFile {

    private static final ObjectMapper JSON = new ObjectMapper();

    record Contents(LinkedHashMap<String, HostTensor> tensors, Map<String, String> metadata) {}

    private PredictorCacheFile() {}

    static Contents read(Path file) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size < 8) throw new IOException(file + ": too short for a safetensors file (" + size + " bytes)");
            ByteBuffer lenBuf = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            while (lenBuf.hasRemaining() && ch.read(lenBuf) >= 0) { }
            long headerLen = lenBuf.flip().getLong();
            if (headerLen <= 0 || headerLen > size - 8 || headerLen > 100_000_000)
                throw new IOException(file + ": bad safetensors header length " + headerLen);
            MemorySegment all = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, Arena.ofAuto());
            byte[] header = all.asSlice(8, headerLen).toArray(ValueLayout.JAVA_BYTE);
            JsonNode root = JSON.readTree(new String(header, StandardCharsets.UTF_8));
            long dataStart = 8 + headerLen;
            LinkedHashMap<String, HostTensor> tensors = new LinkedHashMap<>();
            Map<String, String> meta = new LinkedHashMap<>();
            for (Iterator<Map.Entry<String, JsonNode>> it = root.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                if (e.getKey().equals("__metadata__")) {
                    e.getValue().fields().forEachRemaining(m -> meta.put(m.getKey(), m.getValue().asText()));
                    continue;
                }
                JsonNode t = e.getValue();
                DType dtype = switch (t.path("dtype").asText()) {
                    case "F32" -> DType.F32;
                    case "BF16" -> DType.BF16;
                    case "F16" -> DType.F16;
                    default -> throw new IOException(file + ": tensor " + e.getKey() + " has unsupported dtype " + t.path("dtype"));
                };
                JsonNode shapeNode = t.path("shape");
                int[] shape = new int[shapeNode.size()];
                long numel = 1;
                for (int i = 0; i < shape.length; i++) { shape[i] = shapeNode.get(i).asInt(); numel *= shape[i]; }
                long from = t.path("data_offsets").path(0).asLong(-1), to = t.path("data_offsets").path(1).asLong(-1);
                if (from < 0 || to < from || dataStart + to > size || to - from != numel * dtype.bytes)
                    throw new IOException(file + ": tensor " + e.getKey() + " has bad data_offsets [" + from + ", " + to + "]");
                tensors.put(e.getKey(), new HostTensor(e.getKey(), dtype, shape, all.asSlice(dataStart + from, to - from)));
            }
            return new Contents(tensors, meta);
        }
    }

    /** Writes to a temp file in the same directory and renames it into place. */
    static void write(Path file, LinkedHashMap<String, HostTensor> tensors, Map<String, String> metadata) throws IOException {
        ObjectNode header = JSON.createObjectNode();
        ObjectNode meta = header.putObject("__metadata__");
        metadata.forEach(meta::put);
        long offset = 0;
        for (HostTensor t : tensors.values()) {
            ObjectNode n = header.putObject(t.name());
            n.put("dtype", t.dtype().name());
            var shape = n.putArray("shape");
            for (int d : t.shape()) shape.add(d);
            long bytes = t.numel() * t.dtype().bytes;
            n.putArray("data_offsets").add(offset).add(offset + bytes);
            offset += bytes;
        }
        byte[] h = JSON.writeValueAsBytes(header);
        int padded = (h.length + 7) / 8 * 8;   // data section 8-byte aligned, padding with spaces
        byte[] hp = new byte[padded];
        System.arraycopy(h, 0, hp, 0, h.length);
        for (int i = h.length; i < padded; i++) hp[i] = ' ';
        Path abs = file.toAbsolutePath();
        Files.createDirectories(abs.getParent());
        Path tmp = Files.createTempFile(abs.getParent(), abs.getFileName().toString(), ".tmp");
        try {
            try (OutputStream os = Files.newOutputStream(tmp)) {
                os.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(padded).array());
                os.write(hp);
                for (HostTensor t : tensors.values())
                    os.write(t.data().asSlice(0, t.numel() * t.dtype().bytes).toArray(ValueLayout.JAVA_BYTE));
            }
            Files.move(tmp, abs, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }
}
