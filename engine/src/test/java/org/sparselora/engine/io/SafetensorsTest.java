package org.sparselora.engine.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.backend.DType;

class SafetensorsTest {

    @TempDir Path dir;

    @Test
    void roundTripsF32Bf16F16I32AndMetadata() {
        float[] a = {1f, -2.5f, 3.25f, 0f, 1e-3f, 7f};
        float[] b = {0.1f, 0.2f, -0.3f, 4f};
        Path f = dir.resolve("m.safetensors");
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        t.put("a", a);
        t.put("b", b);
        Safetensors.writeFloats(f, t, Map.of("a", new int[] {2, 3}, "b", new int[] {4}), DType.F32, Map.of("format", "pt"));
        try (Safetensors st = Safetensors.open(f)) {
            assertEquals(List.of("a", "b"), List.copyOf(st.names()));
            assertEquals(Map.of("format", "pt"), st.metadata());
            assertArrayEquals(new int[] {2, 3}, st.get("a").shape());
            assertArrayEquals(a, st.get("a").toFloats());
            assertArrayEquals(b, st.get("b").toFloats());
            // data starts 8-byte aligned, like the reference writer
            long headerLen = ByteBuffer.wrap(readBytes(f), 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
            assertEquals(0, (8 + headerLen) % 8);
        }
        Path g = dir.resolve("bf16.safetensors");
        Safetensors.writeFloats(g, t, Map.of("a", new int[] {6}, "b", new int[] {2, 2}), DType.BF16, Map.of());
        try (Safetensors st = Safetensors.open(g)) {
            assertEquals(DType.BF16, st.get("a").dtype());
            float[] back = st.get("b").toFloats();
            for (int i = 0; i < b.length; i++) assertEquals(Dtypes.bf16ToFloat(Dtypes.floatToBf16(b[i])), back[i], 0f);
            assertTrue(st.metadata().isEmpty());
        }
        Path h = dir.resolve("f16.safetensors");
        Safetensors.writeFloats(h, t, Map.of("a", new int[] {6}, "b", new int[] {4}), DType.F16, null);
        try (Safetensors st = Safetensors.open(h)) {
            assertArrayEquals(a, st.get("a").toFloats(), 1e-3f);
        }
        // I32 via HostTensor, and re-writing tensors that are slices of a mapped file
        MemorySegment ints = MemorySegment.ofArray(new byte[12]);
        for (int i = 0; i < 3; i++) ints.setAtIndex(ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), i, 10 * i - 7);
        try (Safetensors src = Safetensors.open(f)) {
            LinkedHashMap<String, HostTensor> out = new LinkedHashMap<>();
            out.put("ids", new HostTensor("ids", DType.I32, new int[] {3}, ints));
            out.put("a", src.get("a"));
            Path k = dir.resolve("mixed.safetensors");
            Safetensors.write(k, out, Map.of("k", "v"));
            try (Safetensors st = Safetensors.open(k)) {
                MemorySegment d = st.get("ids").data();
                assertEquals(-7, d.getAtIndex(ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 0));
                assertEquals(13, d.getAtIndex(ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 2));
                assertArrayEquals(a, st.get("a").toFloats());
            }
        }
    }

    @Test
    void writeReplacesAtomicallyAndLeavesNoTempFiles() throws IOException {
        Path f = dir.resolve("x.safetensors");
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        t.put("w", new float[] {1, 2});
        Safetensors.writeFloats(f, t, Map.of("w", new int[] {2}), DType.F32, null);
        // a tensor whose bytes do not match its shape fails the write and leaves the old file intact
        LinkedHashMap<String, HostTensor> bad = new LinkedHashMap<>();
        bad.put("w", new HostTensor("w", DType.F32, new int[] {3}, MemorySegment.ofArray(new float[] {1, 2})));
        assertThrows(IllegalArgumentException.class, () -> Safetensors.write(f, bad, null));
        try (Safetensors st = Safetensors.open(f)) {
            assertArrayEquals(new float[] {1, 2}, st.get("w").toFloats());
        }
        try (Stream<Path> s = Files.list(dir)) {
            assertEquals(List.of(f), s.toList());
        }
    }

    @Test
    void emptyAndZeroSizedTensors() {
        Path f = dir.resolve("z.safetensors");
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        t.put("empty", new float[0]);
        t.put("one", new float[] {5});
        Safetensors.writeFloats(f, t, Map.of("empty", new int[] {0, 4}, "one", new int[] {}), DType.F32, null);
        try (Safetensors st = Safetensors.open(f)) {
            assertEquals(0, st.get("empty").numel());
            assertArrayEquals(new float[] {5}, st.get("one").toFloats());
        }
    }

    // ---------------------------------------------------------------- bad input

    private Path raw(String name, String header, int dataBytes) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h);
        Path f = dir.resolve(name);
        Files.write(f, b.array());
        return f;
    }

    private static String fails(Path f) {
        FormatException e = assertThrows(FormatException.class, () -> Safetensors.open(f).close());
        String m = e.getMessage();
        assertTrue(m.startsWith(f.toString() + ": "), "error names the file: " + m);
        assertFalse(m.contains("\n"), "one line: " + m);
        return m;
    }

    @Test
    void truncatedFiles() throws IOException {
        Path tiny = dir.resolve("tiny.safetensors");
        Files.write(tiny, new byte[] {1, 2, 3});
        assertTrue(fails(tiny).contains("truncated"));
        Path empty = dir.resolve("empty.safetensors");
        Files.write(empty, new byte[0]);
        assertTrue(fails(empty).contains("truncated"));

        // header claims more bytes than the file has
        Path good = dir.resolve("good.safetensors");
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        t.put("w", new float[] {1, 2, 3, 4});
        Safetensors.writeFloats(good, t, Map.of("w", new int[] {4}), DType.F32, null);
        byte[] all = readBytes(good);
        Path cut = dir.resolve("cut.safetensors");
        Files.write(cut, java.util.Arrays.copyOf(all, 30));
        assertTrue(fails(cut).contains("truncated"), fails(cut));
        // data section cut short: the tensor runs past the end
        Path cutData = dir.resolve("cutdata.safetensors");
        Files.write(cutData, java.util.Arrays.copyOf(all, all.length - 4));
        assertTrue(fails(cutData).contains("run past the data section"), fails(cutData));
    }

    @Test
    void corruptHeaders() throws IOException {
        Path garbage = dir.resolve("garbage.safetensors");
        Files.write(garbage, new byte[] {(byte) 0xff, (byte) 0xff, (byte) 0xff, (byte) 0xff, 1, 2, 3, 4, 5, 6, 7, 8});
        assertTrue(fails(garbage).contains("header length"));
        assertTrue(fails(raw("json.safetensors", "{\"w\": {\"dtype\": \"F32\", ", 0)).contains("invalid JSON"));
        assertTrue(fails(raw("notobj.safetensors", "[1, 2]", 0)).contains("does not start with '{'"));
        assertTrue(fails(raw("meta.safetensors", "{\"__metadata__\": {\"a\": 1}}", 0)).contains("__metadata__"));
        assertTrue(fails(raw("dup.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                4)).contains("invalid JSON"));
        assertTrue(fails(raw("noshape.safetensors", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4))
                .contains("'w': missing shape"));
    }

    @Test
    void dtypes() throws IOException {
        String m = fails(raw("f64.safetensors", "{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8));
        assertTrue(m.contains("dtype F64 is not supported"), m);
        m = fails(raw("weird.safetensors", "{\"w\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8));
        assertTrue(m.contains("unknown dtype 'Q4'"), m);
    }

    @Test
    void wrongSizesOverlapsAndHoles() throws IOException {
        String m = fails(raw("size.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 12));
        assertTrue(m.contains("'w'") && m.contains("needs 16 bytes") && m.contains("hold 12"), m);
        m = fails(raw("overlap.safetensors",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                12));
        assertTrue(m.contains("'a'") && m.contains("'b'") && m.contains("overlap"), m);
        m = fails(raw("hole.safetensors",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                12));
        assertTrue(m.contains("hole"), m);
        m = fails(raw("trailing.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 9));
        assertTrue(m.contains("cover only 4"), m);
        m = fails(raw("neg.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4));
        assertTrue(m.contains("invalid data_offsets"), m);
    }

    @Test
    void missingFileAndMissingTensor() {
        assertTrue(fails(dir.resolve("nope.safetensors")).contains("no such"));
        Path f = dir.resolve("m.safetensors");
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        t.put("w", new float[] {1});
        Safetensors.writeFloats(f, t, Map.of("w", new int[] {1}), DType.F32, null);
        try (Safetensors st = Safetensors.open(f)) {
            FormatException e = assertThrows(FormatException.class, () -> st.get("v"));
            assertTrue(e.getMessage().contains("'v'"));
        }
    }

    static byte[] readBytes(Path p) {
        try {
            return Files.readAllBytes(p);
        } catch (IOException e) {
            throw new RuntimeException(e);
        }
    }
}
