package org.sparselora.engine.tokenizer;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import org.sparselora.engine.io.FormatException;

/**
 * The llama2.c tokenizer ({@code tokenizer.bin}: int32 max_token_length, then per token float32
 * score, int32 length, that many UTF-8 bytes; little-endian). Encoding follows llama2.c's
 * {@code encode} step for step, so ids match the C reference exactly: optional BOS (1), a dummy
 * " " piece when the text is non-empty (SentencePiece's add_dummy_prefix), one piece per UTF-8
 * code point or its bytes as {@code <0xXX>} tokens (ids 3–258) when the code point is not in the
 * vocabulary, then greedy merging of the adjacent pair whose concatenation has the highest score
 * (leftmost on ties) until no pair merges.
 *
 * <p>Pieces are compared as bytes: they are held as ISO-8859-1 strings, which map bytes to chars
 * one-to-one, so lookups are exact even for pieces that are not whole UTF-8 characters.
 */
public final class Llama2cTokenizer implements Tokenizer {

    public static final int UNK = 0, BOS = 1, EOS = 2, BYTE0 = 3;

    private final String[] pieces;        // bytes as ISO-8859-1 chars
    private final float[] scores;
    private final Map<String, Integer> ids;
    private final int maxTokenLength;

    public Llama2cTokenizer(String[] pieces, float[] scores, int maxTokenLength) {
        this.pieces = pieces;
        this.scores = scores;
        this.maxTokenLength = maxTokenLength;
        this.ids = new HashMap<>();
        // llama2.c looks pieces up by binary search over a sorted copy; with duplicate pieces the
        // lowest id is the deterministic choice
        for (int i = pieces.length - 1; i >= 0; i--) ids.put(pieces[i], i);
    }

    public static Llama2cTokenizer load(Path file) {
        byte[] all;
        try {
            all = Files.readAllBytes(file);
        } catch (IOException e) {
            throw new FormatException(file, "cannot read llama2.c tokenizer: " + e.getMessage());
        }
        ByteBuffer b = ByteBuffer.wrap(all).order(ByteOrder.LITTLE_ENDIAN);
        if (b.remaining() < 4) throw new FormatException(file, "truncated llama2.c tokenizer: no header");
        int maxLen = b.getInt();
        if (maxLen <= 0 || maxLen > 1 << 16) throw new FormatException(file, "not a llama2.c tokenizer: max_token_length " + maxLen);
        java.util.List<String> pieces = new java.util.ArrayList<>();
        java.util.List<Float> scores = new java.util.ArrayList<>();
        while (b.hasRemaining()) {
            int id = pieces.size();
            if (b.remaining() < 8) throw new FormatException(file, "truncated llama2.c tokenizer at token " + id);
            float score = b.getFloat();
            int len = b.getInt();
            if (len < 0 || len > b.remaining())
                throw new FormatException(file, "corrupt llama2.c tokenizer: token " + id + " has length " + len
                        + " with " + b.remaining() + " bytes left");
            byte[] bytes = new byte[len];
            b.get(bytes);
            pieces.add(new String(bytes, StandardCharsets.ISO_8859_1));
            scores.add(score);
        }
        if (pieces.size() < BYTE0 + 256)
            throw new FormatException(file, "llama2.c tokenizer has " + pieces.size()
                    + " tokens; needs at least 259 (<unk>, BOS, EOS, 256 byte tokens)");
        float[] s = new float[scores.size()];
        for (int i = 0; i < s.length; i++) s[i] = scores.get(i);
        return new Llama2cTokenizer(pieces.toArray(String[]::new), s, maxLen);
    }

    private int lookup(String piece) {
        Integer id = ids.get(piece);
        return id == null ? -1 : id;
    }

    @Override
    public int[] encode(String text, boolean addSpecial) {
        byte[] utf8 = text.getBytes(StandardCharsets.UTF_8);
        int[] tokens = new int[utf8.length + 3];
        int n = 0;
        if (addSpecial) tokens[n++] = BOS;
        if (utf8.length > 0) {
            int space = lookup(" ");
            // a vocabulary without a " " piece falls back to the space's byte token
            tokens[n++] = space >= 0 ? space : BYTE0 + ' ';
        }
        // one piece per code point: a lead byte plus its continuation bytes (at most 4)
        int start = 0;
        while (start < utf8.length) {
            int end = start + 1;
            while (end < utf8.length && (utf8[end] & 0xC0) == 0x80 && end - start < 4) end++;
            String piece = new String(utf8, start, end - start, StandardCharsets.ISO_8859_1);
            int id = lookup(piece);
            if (id >= 0) {
                tokens[n++] = id;
            } else {
                for (int i = start; i < end; i++) tokens[n++] = (utf8[i] & 0xFF) + BYTE0;
            }
            start = end;
        }
        return mergeGreedy(tokens, n);
    }

    /**
     * llama2.c's merge loop (repeatedly merge the adjacent pair whose concatenation is a piece with
     * the highest score, the leftmost on ties, until none is a piece) in O(n log n) instead of
     * O(n²): candidate pairs sit in a heap ordered by (score desc, left position asc); the tokens
     * form a linked list whose nodes keep their original positions, so "leftmost" is the smallest
     * position; a merge bumps the stamp of the surviving node, which retires heap entries built on
     * its old token.
     */
    private int[] mergeGreedy(int[] tok, int n) {
        if (n < 2) return Arrays.copyOf(tok, n);
        int[] next = new int[n], prev = new int[n], stamp = new int[n];
        for (int i = 0; i < n; i++) { next[i] = i + 1; prev[i] = i - 1; }
        next[n - 1] = -1;
        // entry: {left, right, mergedId, stampLeft, stampRight}; scores[mergedId] orders the heap
        java.util.PriorityQueue<int[]> heap = new java.util.PriorityQueue<>((a, b) -> {
            int c = Float.compare(scores[b[2]], scores[a[2]]);
            return c != 0 ? c : Integer.compare(a[0], b[0]);
        });
        for (int i = 0; i + 1 < n; i++) offer(heap, tok, stamp, i, i + 1);
        while (!heap.isEmpty()) {
            int[] e = heap.poll();
            int l = e[0], r = e[1];
            if (stamp[l] != e[3] || stamp[r] != e[4] || next[l] != r) continue;   // stale
            tok[l] = e[2];
            stamp[l]++;
            stamp[r]++;                       // r is gone: retire entries that start at it
            next[l] = next[r];
            if (next[r] >= 0) prev[next[r]] = l;
            if (prev[l] >= 0) offer(heap, tok, stamp, prev[l], l);
            if (next[l] >= 0) offer(heap, tok, stamp, l, next[l]);
        }
        int count = 0;
        int[] out = new int[n];
        for (int i = 0; i >= 0; i = next[i]) out[count++] = tok[i];
        return Arrays.copyOf(out, count);
    }

    private void offer(java.util.PriorityQueue<int[]> heap, int[] tok, int[] stamp, int l, int r) {
        int id = lookup(pieces[tok[l]] + pieces[tok[r]]);
        // llama2.c starts its search at -1e10 and only takes strictly better scores
        if (id >= 0 && scores[id] > -1e10f) heap.add(new int[] {l, r, id, stamp[l], stamp[r]});
    }

    /** The bytes one token stands for: a byte token is its byte, BOS/EOS print nothing. */
    private byte[] bytesOf(int id) {
        if (id == BOS || id == EOS) return new byte[0];
        String p = pieces[id];
        if (id >= BYTE0 && id < BYTE0 + 256 && p.length() == 6 && p.startsWith("<0x") && p.endsWith(">"))
            return new byte[] {(byte) (id - BYTE0)};
        return p.getBytes(StandardCharsets.ISO_8859_1);
    }

    /**
     * Concatenated bytes, decoded as UTF-8 (so multi-byte characters split over byte tokens come
     * out whole). Like llama2.c, a piece right after BOS drops its leading space; the first piece
     * of the sequence does too (it is the dummy prefix SentencePiece added).
     */
    @Override
    public String decode(int[] ids) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        int prev = BOS;
        for (int id : ids) {
            checkId(id);
            byte[] b = bytesOf(id);
            int from = (prev == BOS && b.length > 0 && b[0] == ' ') ? 1 : 0;
            out.write(b, from, b.length - from);
            prev = id;
        }
        return out.toString(StandardCharsets.UTF_8);
    }

    @Override
    public String decodeToken(int id) {
        checkId(id);
        if (id == BOS || id == EOS || id == UNK) return new String(pieces[id].getBytes(StandardCharsets.ISO_8859_1), StandardCharsets.UTF_8);
        return new String(bytesOf(id), StandardCharsets.UTF_8);
    }

    private void checkId(int id) {
        if (id < 0 || id >= pieces.length) throw new IllegalArgumentException("token id " + id + " out of range [0, " + pieces.length + ")");
    }

    /** The raw piece bytes of a token (as stored in the file). */
    public byte[] pieceBytes(int id) {
        checkId(id);
        return pieces[id].getBytes(StandardCharsets.ISO_8859_1);
    }

    public float score(int id) { return scores[id]; }

    public int maxTokenLength() { return maxTokenLength; }

    @Override public int bosId() { return BOS; }

    @Override public int eosId() { return EOS; }

    /** llama2.c has no pad token. */
    @Override public int padId() { return -1; }

    @Override public int vocabSize() { return pieces.length; }
}
