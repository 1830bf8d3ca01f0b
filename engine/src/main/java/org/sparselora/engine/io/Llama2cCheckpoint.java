package org.sparselora.engine.io;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.model.LlamaConfig;

/**
 * A llama2.c legacy {@code .bin} checkpoint as a {@link WeightSource} with HF names, memory-mapped.
 * Layout: a header of 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
 * a negative vocab_size means the classifier is stored separately after the RoPE tables), then f32
 * arrays: token embedding (V,D), rms_att (L,D), wq (L,D,D), wk (L,KV,D), wv (L,KV,D), wo (L,D,D),
 * rms_ffn (L,D), w1 (L,H,D), w2 (L,D,H), w3 (L,H,D), rms_final (D), freq_cis_real/imag (T, hs/2)
 * each, [wcls (V,D)].
 *
 * <p>llama2.c rotates interleaved pairs (2i, 2i+1) while HF rotates halves (i, i + hs/2), so the
 * rows of wq and wk are permuted on read the way HF's conversion script does: within each head,
 * HF row {@code j·hs/2 + i} (j = 0, 1) is llama2.c row {@code 2i + j}. Those two tensors are copied
 * (permuted) into heap memory; everything else is a zero-copy slice of the mapping. RoPE theta
 * 10000, RMSNorm eps 1e-5 (llama2.c's constants); BOS 1, EOS 2.
 */
public final class Llama2cCheckpoint implements WeightSource {
    private static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private final Path file;
    private final Arena arena;
    private final LlamaConfig config;
    private final Map<String, HostTensor> tensors = new LinkedHashMap<>();

    private Llama2cCheckpoint(Path file, Arena arena, MemorySegment seg) {
        this.file = file;
        this.arena = arena;
        if (seg.byteSize() < 28) throw new IllegalArgumentException(file + ": too short for a llama2.c header (" + seg.byteSize() + " bytes)");
        int dim = seg.get(I32, 0), hidden = seg.get(I32, 4), layers = seg.get(I32, 8), heads = seg.get(I32, 12),
                kvHeads = seg.get(I32, 16), vocab = seg.get(I32, 20), seqLen = seg.get(I32, 24);
        boolean shared = vocab > 0;
        vocab = Math.abs(vocab);
        if (dim <= 0 || hidden <= 0 || layers <= 0 || heads <= 0 || kvHeads <= 0 || seqLen <= 0 || vocab <= 0
                || dim % heads != 0 || heads % kvHeads != 0 || (dim / heads) % 2 != 0)
            throw new IllegalArgumentException(file + ": implausible llama2.c header dim=" + dim + " hidden=" + hidden + " layers=" + layers
                    + " heads=" + heads + " kv_heads=" + kvHeads + " vocab=" + vocab + " seq_len=" + seqLen);
        int hs = dim / heads, kvDim = kvHeads * hs;
        this.config = new LlamaConfig("LlamaForCausalLM", dim, hidden, layers, heads, kvHeads, hs, vocab, seqLen,
                1e-5f, 10000f, null, shared, false, 1, 2);
        long[] off = {28};
        MemorySegment emb = take(seg, off, (long) vocab * dim, "token_embedding_table");
        MemorySegment rmsAtt = take(seg, off, (long) layers * dim, "rms_att_weight");
        MemorySegment wq = take(seg, off, (long) layers * dim * dim, "wq");
        MemorySegment wk = take(seg, off, (long) layers * kvDim * dim, "wk");
        MemorySegment wv = take(seg, off, (long) layers * kvDim * dim, "wv");
        MemorySegment wo = take(seg, off, (long) layers * dim * dim, "wo");
        MemorySegment rmsFfn = take(seg, off, (long) layers * dim, "rms_ffn_weight");
        MemorySegment w1 = take(seg, off, (long) layers * hidden * dim, "w1");
        MemorySegment w2 = take(seg, off, (long) layers * dim * hidden, "w2");
        MemorySegment w3 = take(seg, off, (long) layers * hidden * dim, "w3");
        MemorySegment rmsFinal = take(seg, off, dim, "rms_final_weight");
        take(seg, off, (long) seqLen * hs / 2, "freq_cis_real");
        take(seg, off, (long) seqLen * hs / 2, "freq_cis_imag");
        MemorySegment wcls = shared ? null : take(seg, off, (long) vocab * dim, "wcls");
        // the header alone cannot be trusted: other head counts or sizes still fit a long enough file,
        // and would be read as a different (wrong) model; the arrays must account for every byte
        if (off[0] != seg.byteSize())
            throw new IllegalArgumentException(file + ": llama2.c header (dim=" + dim + " hidden=" + hidden + " layers=" + layers + " heads=" + heads
                    + " kv_heads=" + kvHeads + " vocab=" + vocab + " seq_len=" + seqLen + ", " + (shared ? "shared" : "separate") + " classifier) implies "
                    + off[0] + " bytes but the file has " + seg.byteSize() + ": the header does not match the weights");

        put("model.embed_tokens.weight", emb, vocab, dim);
        for (int l = 0; l < layers; l++) {
            String p = "model.layers." + l + ".";
            put(p + "input_layernorm.weight", layer(rmsAtt, l, dim), dim);
            tensors.put(p + "self_attn.q_proj.weight", permuted(p + "self_attn.q_proj.weight", layer(wq, l, (long) dim * dim), heads, hs, dim));
            tensors.put(p + "self_attn.k_proj.weight", permuted(p + "self_attn.k_proj.weight", layer(wk, l, (long) kvDim * dim), kvHeads, hs, dim));
            put(p + "self_attn.v_proj.weight", layer(wv, l, (long) kvDim * dim), kvDim, dim);
            put(p + "self_attn.o_proj.weight", layer(wo, l, (long) dim * dim), dim, dim);
            put(p + "post_attention_layernorm.weight", layer(rmsFfn, l, dim), dim);
            put(p + "mlp.gate_proj.weight", layer(w1, l, (long) hidden * dim), hidden, dim);
            put(p + "mlp.down_proj.weight", layer(w2, l, (long) dim * hidden), dim, hidden);
            put(p + "mlp.up_proj.weight", layer(w3, l, (long) hidden * dim), hidden, dim);
        }
        put("model.norm.weight", rmsFinal, dim);
        if (wcls != null) put("lm_head.weight", wcls, vocab, dim);
    }

    /** Maps {@code file}; errors name the file and what is wrong with it. */
    public static Llama2cCheckpoint open(Path file) {
        Arena arena = Arena.ofShared();
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            MemorySegment seg = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena);
            return new Llama2cCheckpoint(file, arena, seg);
        } catch (IOException e) {
            arena.close();
            throw new IllegalArgumentException(file + ": cannot read llama2.c checkpoint: " + e.getMessage(), e);
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private MemorySegment take(MemorySegment seg, long[] off, long floats, String what) {
        long bytes = floats * 4;
        if (off[0] + bytes > seg.byteSize())
            throw new IllegalArgumentException(file + ": truncated llama2.c checkpoint: " + what + " needs bytes [" + off[0] + ", " + (off[0] + bytes)
                    + ") but the file has " + seg.byteSize());
        MemorySegment s = seg.asSlice(off[0], bytes);
        off[0] += bytes;
        return s;
    }

    private static MemorySegment layer(MemorySegment all, int l, long floats) { return all.asSlice(l * floats * 4, floats * 4); }

    private void put(String name, MemorySegment data, int... shape) { tensors.put(name, new HostTensor(name, DType.F32, shape, data)); }

    /** Meta interleaved-pair rows → HF rotate-half rows, per head: hf[h·hs + j·hs/2 + i] = meta[h·hs + 2i + j]. */
    private static HostTensor permuted(String name, MemorySegment src, int heads, int hs, int cols) {
        int rows = heads * hs, half = hs / 2;
        MemorySegment dst = Arena.ofAuto().allocate((long) rows * cols * 4, 4);
        for (int h = 0; h < heads; h++)
            for (int j = 0; j < 2; j++)
                for (int i = 0; i < half; i++) {
                    long hfRow = (long) h * hs + (long) j * half + i, metaRow = (long) h * hs + 2L * i + j;
                    MemorySegment.copy(src, metaRow * cols * 4, dst, hfRow * cols * 4, (long) cols * 4);
                }
        return new HostTensor(name, DType.F32, new int[] {rows, cols}, dst);
    }

    public Path file() { return file; }

    @Override public LlamaConfig config() { return config; }

    @Override public Set<String> names() { return tensors.keySet(); }

    @Override
    public HostTensor get(String name) {
        HostTensor t = tensors.get(name);
        if (t == null) throw new IllegalArgumentException(file + ": no tensor " + name + " in this llama2.c checkpoint");
        return t;
    }

    @Override
    public void close() { arena.close(); }

    /** Reads a float from a mapped tensor (tests and tools). */
    static float at(HostTensor t, long i) { return t.data().getAtIndex(F32, i); }
}
