package org.sparselora.engine.hardening;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;

/** Writes llama2.c checkpoints of a given header with deterministic small weights (test fixtures). */
final class Llama2cFiles {

    private Llama2cFiles() {}

    /** Floats a llama2.c file of this header holds after the 28-byte header. */
    static long floats(int dim, int hidden, int layers, int heads, int kvHeads, int vocab, int seqLen, boolean shared) {
        long hs = dim / heads, kv = kvHeads * hs;
        return (long) vocab * dim + (long) layers * dim + (long) layers * dim * dim + 2L * layers * kv * dim + (long) layers * dim * dim
                + (long) layers * dim + 3L * layers * hidden * dim + dim + (long) seqLen * hs + (shared ? 0 : (long) vocab * dim);
    }

    static byte[] bytes(int[] header, long floats) {
        ByteBuffer b = ByteBuffer.allocate(Math.toIntExact(28 + 4 * floats)).order(ByteOrder.LITTLE_ENDIAN);
        for (int h : header) b.putInt(h);
        for (long i = 0; i < floats; i++) b.putFloat((float) Math.sin(i * 0.37) * 0.05f + (i % 97 == 0 ? 1f : 0f));
        return b.array();
    }

    /** A consistent file: dim 16, hidden 24, 2 layers, 4 heads, 2 kv heads, vocab 32, seq 8, shared classifier. */
    static Path valid(Path file) throws IOException {
        int[] h = {16, 24, 2, 4, 2, 32, 8};
        return Files.write(file, bytes(h, floats(16, 24, 2, 4, 2, 32, 8, true)));
    }
}
