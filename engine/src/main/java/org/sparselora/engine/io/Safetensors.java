package org.sparselora.engine.io;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Supplier;
import org.sparselora.engine.backend.DType;

/**
 * The safetensors format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
 * ({@code name -> {dtype, shape, data_offsets: [begin, end)}} plus an optional
 * {@code __metadata__} string map), then the data section the offsets point into.
 *
 * <p>{@link #open} memory-maps the file and hands out {@link HostTensor}s that are slices of the
 * mapping: no tensor is copied, and the mapping lives until {@link #close}. Everything in the header
 * is validated up front (length against the file size, JSON syntax, dtype names, shape × element
 * size against the byte range, ranges inside the data section, no overlaps or holes, as the
 * reference implementation requires) so a bad file fails once with a line naming the file and the
 * problem, never later inside a kernel. Writers go through a temporary file and a rename.
 */
public final class Safetensors implements AutoCloseable {

    /** The reference implementation's cap; a larger "header" is a corrupt length field. */
    public static final long MAX_HEADER_BYTES = 100L << 20;

    private static final ValueLayout.OfLong U64 = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ObjectMapper JSON = new ObjectMapper()
            .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
    /** dtype names of the format that this engine does not compute with: named in the error. */
    private static final Set<String> OTHER_DTYPES = Set.of("F64", "I64", "I16", "I8", "U8", "U16", "U32", "U64",
            "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64");
    private static final String METADATA = "__metadata__";

    private final Path path;
    private final Arena arena;
    private final Map<String, HostTensor> tensors;
    private final Map<String, String> metadata;

    private Safetensors(Path path, Arena arena, Map<String, HostTensor> tensors, Map<String, String> metadata) {
        this.path = path;
        this.arena = arena;
        this.tensors = Collections.unmodifiableMap(tensors);
        this.metadata = Collections.unmodifiableMap(metadata);
    }

    /** Memory-maps and validates {@code path}; a bad file is a {@link FormatException}. */
    public static Safetensors open(Path path) {
        if (!Files.isRegularFile(path)) throw new FormatException(path, "no such safetensors file");
        Arena arena = Arena.ofShared();
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size < 8)
                throw new FormatException(path, "truncated safetensors file: " + size
                        + " bytes, but the 8-byte header length alone needs 8");
            MemorySegment file = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            long headerLen = file.get(U64, 0);
            if (headerLen < 2 || headerLen > MAX_HEADER_BYTES)
                throw new FormatException(path, "corrupt safetensors header: header length field is " + headerLen
                        + " (file has " + size + " bytes)");
            if (headerLen > size - 8)
                throw new FormatException(path, "truncated safetensors file: header length " + headerLen
                        + " needs " + (8 + headerLen) + " bytes but the file has " + size);
            byte[] header = file.asSlice(8, headerLen).toArray(ValueLayout.JAVA_BYTE);
            long dataStart = 8 + headerLen;
            MemorySegment data = file.asSlice(dataStart, size - dataStart);
            LinkedHashMap<String, String> meta = new LinkedHashMap<>();
            LinkedHashMap<String, HostTensor> tensors = parseHeader(path, header, data, meta);
            return new Safetensors(path, arena, tensors, meta);
        } catch (IOException e) {
            arena.close();
            throw new FormatException(path, "cannot read safetensors file: " + e.getMessage(), e);
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private record Range(String name, long begin, long end) {}

    private static LinkedHashMap<String, HostTensor> parseHeader(Path path, byte[] header, MemorySegment data,
                                                               Map<String, String> meta) {
        if (header[0] != '{')
            throw new FormatException(path, "corrupt safetensors header: it does not start with '{'");
        JsonNode root;
        try {
            root = JSON.readTree(header);
        } catch (JsonProcessingException e) {
            throw new FormatException(path, "corrupt safetensors header: " + JsonErrors.describe(e));
        } catch (IOException e) {
            throw new FormatException(path, "corrupt safetensors header: " + e.getMessage());
        }
        if (!(root instanceof ObjectNode obj))
            throw new FormatException(path, "corrupt safetensors header: not a JSON object");
        long dataSize = data.byteSize();
        List<Range> ranges = new ArrayList<>();
        LinkedHashMap<String, HostTensor> out = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = obj.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            String name = e.getKey();
            JsonNode v = e.getValue();
            if (name.equals(METADATA)) {
                if (!v.isObject()) throw new FormatException(path, "__metadata__ must be an object of strings");
                for (Iterator<Map.Entry<String, JsonNode>> m = v.fields(); m.hasNext(); ) {
                    Map.Entry<String, JsonNode> kv = m.next();
                    if (!kv.getValue().isTextual())
                        throw new FormatException(path, "__metadata__ value of '" + kv.getKey() + "' is not a string");
                    meta.put(kv.getKey(), kv.getValue().textValue());
                }
                continue;
            }
            if (!v.isObject()) throw new FormatException(path, "tensor '" + name + "': entry is not an object");
            DType dtype = parseDtype(path, name, v.get("dtype"));
            int[] shape = parseShape(path, name, v.get("shape"));
            JsonNode off = v.get("data_offsets");
            if (off == null || !off.isArray() || off.size() != 2 || !off.get(0).canConvertToExactIntegral()
                    || !off.get(1).canConvertToExactIntegral() || !off.get(0).canConvertToLong()
                    || !off.get(1).canConvertToLong())
                throw new FormatException(path, "tensor '" + name + "': data_offsets must be [begin, end] integers");
            long begin = off.get(0).asLong(), end = off.get(1).asLong();
            if (begin < 0 || end < begin)
                throw new FormatException(path, "tensor '" + name + "': invalid data_offsets [" + begin + ", " + end + "]");
            long numel = 1;
            for (int d : shape) numel = Math.multiplyExact(numel, d);
            long expected = Math.multiplyExact(numel, (long) dtype.bytes);
            if (end - begin != expected)
                throw new FormatException(path, "tensor '" + name + "': shape " + Arrays.toString(shape)
                        + " of " + dtype + " needs " + expected + " bytes but data_offsets [" + begin + ", " + end
                        + "] hold " + (end - begin));
            if (end > dataSize)
                throw new FormatException(path, "tensor '" + name + "': data_offsets [" + begin + ", " + end
                        + "] run past the data section (" + dataSize + " bytes; file truncated?)");
            ranges.add(new Range(name, begin, end));
            out.put(name, new HostTensor(name, dtype, shape, data.asSlice(begin, end - begin)));
        }
        checkLayout(path, ranges, dataSize);
        return out;
    }

    /** The reference implementation requires the ranges to tile the data section exactly. */
    private static void checkLayout(Path path, List<Range> ranges, long dataSize) {
        ranges.sort(Comparator.comparingLong(Range::begin).thenComparingLong(Range::end));
        long pos = 0;
        Range prev = null;
        for (Range r : ranges) {
            if (r.begin < pos)
                throw new FormatException(path, "tensors '" + prev.name + "' [" + prev.begin + ", " + prev.end
                        + ") and '" + r.name + "' [" + r.begin + ", " + r.end + ") overlap");
            if (r.begin > pos)
                throw new FormatException(path, "data section has a hole of " + (r.begin - pos) + " bytes before tensor '"
                        + r.name + "' (offset " + pos + ")");
            pos = r.end;
            prev = r;
        }
        if (pos != dataSize)
            throw new FormatException(path, "data section has " + dataSize + " bytes but the tensors cover only "
                    + pos + " (trailing bytes or a wrong header)");
    }

    private static DType parseDtype(Path path, String name, JsonNode n) {
        if (n == null || !n.isTextual()) throw new FormatException(path, "tensor '" + name + "': missing dtype");
        String s = n.textValue();
        return switch (s) {
            case "F32" -> DType.F32;
            case "BF16" -> DType.BF16;
            case "F16" -> DType.F16;
            case "I32" -> DType.I32;
            default -> throw new FormatException(path, "tensor '" + name + "': "
                    + (OTHER_DTYPES.contains(s) ? "dtype " + s + " is not supported" : "unknown dtype '" + s + "'")
                    + " (supported: F32, BF16, F16, I32)");
        };
    }

    private static int[] parseShape(Path path, String name, JsonNode n) {
        if (n == null || !n.isArray()) throw new FormatException(path, "tensor '" + name + "': missing shape");
        int[] shape = new int[n.size()];
        for (int i = 0; i < shape.length; i++) {
            JsonNode d = n.get(i);
            if (!d.canConvertToExactIntegral() || !d.canConvertToInt() || d.asLong() < 0)
                throw new FormatException(path, "tensor '" + name + "': invalid shape " + n);
            shape[i] = d.asInt();
        }
        return shape;
    }

    public Path path() { return path; }

    /** Tensors in header order. Valid until {@link #close}. */
    public Map<String, HostTensor> tensors() { return tensors; }

    public Set<String> names() { return tensors.keySet(); }

    public Map<String, String> metadata() { return metadata; }

    public boolean has(String name) { return tensors.containsKey(name); }

    public HostTensor get(String name) {
        HostTensor t = tensors.get(name);
        if (t == null) throw new FormatException(path, "no tensor named '" + name + "'");
        return t;
    }

    /** Unmaps the file; tensors handed out before become unusable. */
    @Override
    public void close() { arena.close(); }

    // ------------------------------------------------------------------ writing

    /** A tensor to be written whose bytes are produced only when its turn comes (streaming writes). */
    public record Pending(String name, DType dtype, int[] shape, Supplier<MemorySegment> data) {
        public long byteSize() {
            long n = dtype.bytes;
            for (int d : shape) n = Math.multiplyExact(n, d);
            return n;
        }
    }

    /** Writes {@code tensors} (in map order) and {@code metadata} to {@code path} atomically. */
    public static void write(Path path, LinkedHashMap<String, HostTensor> tensors, Map<String, String> metadata) {
        List<Pending> list = new ArrayList<>();
        for (Map.Entry<String, HostTensor> e : tensors.entrySet()) {
            HostTensor t = e.getValue();
            list.add(new Pending(e.getKey(), t.dtype(), t.shape(), t::data));
        }
        writeStreaming(path, list, metadata);
    }

    /** Writes float arrays as F32, BF16 or F16 tensors; {@code shapes} gives each one's shape. */
    public static void writeFloats(Path path, LinkedHashMap<String, float[]> tensors, Map<String, int[]> shapes,
                                   DType dtype, Map<String, String> metadata) {
        if (!dtype.isFloating()) throw new IllegalArgumentException("writeFloats needs a floating dtype, got " + dtype);
        List<Pending> list = new ArrayList<>();
        for (Map.Entry<String, float[]> e : tensors.entrySet()) {
            int[] shape = shapes.get(e.getKey());
            if (shape == null) throw new IllegalArgumentException("no shape given for tensor '" + e.getKey() + "'");
            float[] v = e.getValue();
            list.add(new Pending(e.getKey(), dtype, shape, () -> Dtypes.fromFloats(dtype, v)));
        }
        writeStreaming(path, list, metadata);
    }

    /**
     * Writes tensors one at a time: each {@link Pending#data()} is called only when that tensor is
     * written, so a caller can produce a converted or merged tensor, have it written, and let it go
     * before the next one (a whole model never needs a second copy in memory).
     */
    public static void writeStreaming(Path path, List<Pending> tensors, Map<String, String> metadata) {
        ObjectNode root = JSON.createObjectNode();
        if (metadata != null && !metadata.isEmpty()) {
            ObjectNode m = root.putObject(METADATA);
            metadata.forEach(m::put);
        }
        long offset = 0;
        for (Pending t : tensors) {
            if (t.name.equals(METADATA) || root.has(t.name))
                throw new IllegalArgumentException("duplicate or reserved tensor name '" + t.name + "'");
            for (int d : t.shape) if (d < 0) throw new IllegalArgumentException("negative dimension in '" + t.name + "'");
            ObjectNode e = root.putObject(t.name);
            e.put("dtype", t.dtype.name());
            ArrayNode s = e.putArray("shape");
            for (int d : t.shape) s.add(d);
            long end = offset + t.byteSize();
            e.putArray("data_offsets").add(offset).add(end);
            offset = end;
        }
        byte[] json;
        try {
            json = JSON.writeValueAsString(root).getBytes(StandardCharsets.UTF_8);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
        // pad with spaces so the data section starts 8-byte aligned, as the reference writer does
        int padded = (int) ((json.length + 7) / 8 * 8);
        byte[] header = Arrays.copyOf(json, padded);
        Arrays.fill(header, json.length, padded, (byte) ' ');
        AtomicFiles.writeFile(path, tmp -> {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING);
                 Arena staging = Arena.ofConfined()) {
                MemorySegment buf = staging.allocate(8L << 20);
                ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(0, header.length);
                writeFully(ch, len);
                writeFully(ch, ByteBuffer.wrap(header));
                for (Pending t : tensors) {
                    MemorySegment seg = t.data.get();
                    if (seg.byteSize() != t.byteSize())
                        throw new IllegalArgumentException("tensor '" + t.name + "' has " + seg.byteSize()
                                + " bytes but shape " + Arrays.toString(t.shape) + " of " + t.dtype
                                + " needs " + t.byteSize());
                    writeSegment(ch, seg, buf);
                }
                ch.force(true);
            }
        });
    }

    /** Copies through a small native buffer: heap segments over float[] cannot be viewed as a ByteBuffer. */
    private static void writeSegment(FileChannel ch, MemorySegment seg, MemorySegment staging) throws IOException {
        long chunk = staging.byteSize();
        for (long pos = 0; pos < seg.byteSize(); pos += chunk) {
            long n = Math.min(chunk, seg.byteSize() - pos);
            MemorySegment.copy(seg, pos, staging, 0, n);
            writeFully(ch, staging.asSlice(0, n).asByteBuffer());
        }
    }

    private static void writeFully(FileChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) ch.write(b);
    }
}
