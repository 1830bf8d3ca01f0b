package org.sparselora.engine.sparse;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SortedSet;
import java.util.TreeSet;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.io.Dtypes;
import org.sparselora.engine.io.HostTensor;
import org.sparselora.engine.io.Safetensors;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.model.LlamaConfig;

/**
 * The SVD predictor (docs/METHOD.md#predictor): rank-r factors {@code P} (in×r), {@code Q} (r×out) of the frozen
 * gate/up projections of every layer whose MLP is sparse and of q/k/v of every layer whose
 * attention is sparse. Built once per base model from the frozen weights and cached on disk as
 * safetensors ({@code layers.{i}.{gate|up|q|k|v}_proj.{p|q}}); the metadata records the rank and,
 * per factored projection, a SHA-256 of its source tensor (dtype, shape, bytes), so a cache from
 * another model, another rank or changed weights is detected and that entry rebuilt — never used.
 * Factors are stored in the source weights' dtype and held in memory already rounded to it, so a
 * fresh build and a cache hit select the same channels.
 */
public final class SvdPredictor {

    public static final String FORMAT = "sparselora-svd-predictor/1";

    /** The factored projections, with their HF module path. */
    public enum Proj {
        GATE("mlp", "gate_proj"), UP("mlp", "up_proj"), Q("self_attn", "q_proj"), K("self_attn", "k_proj"), V("self_attn", "v_proj");

        public final String module, name;

        Proj(String module, String name) { this.module = module; this.name = name; }

        public String weightName(int layer) { return "model.layers." + layer + "." + module + "." + name + ".weight"; }

        public String key(int layer) { return "layers." + layer + "." + name; }

        public boolean mlp() { return module.equals("mlp"); }
    }

    /** Progress while building: {@code done} of {@code total} projections factored. */
    public interface Progress {
        void step(int done, int total, String what);

        default void note(String message) {}

        Progress NONE = (d, t, w) -> {};
        Progress STDERR = new Progress() {
            @Override public void step(int done, int total, String what) {
                System.err.printf("svd predictor: %d/%d %s%n", done, total, what);
            }
            @Override public void note(String message) { System.err.println("svd predictor: " + message); }
        };
    }

    private final LlamaConfig config;
    private final int rank;
    private final Map<String, LowRankSvd.Factors> factors;   // by Proj.key(layer)
    private final Map<String, String> sourceHashes;           // by Proj.key(layer)
    private final Map<String, DType> dtypes;                  // storage dtype by Proj.key(layer)
    private final int built, reused;

    private SvdPredictor(LlamaConfig config, int rank, Map<String, LowRankSvd.Factors> factors,
                         Map<String, String> sourceHashes, Map<String, DType> dtypes, int built, int reused) {
        this.config = config;
        this.rank = rank;
        this.factors = factors;
        this.sourceHashes = sourceHashes;
        this.dtypes = dtypes;
        this.built = built;
        this.reused = reused;
    }

    public LlamaConfig config() { return config; }

    public int rank() { return rank; }

    /** The factors of one projection, or null when that projection was not factored. */
    public LowRankSvd.Factors get(int layer, Proj proj) { return factors.get(proj.key(layer)); }

    public boolean has(int layer, Proj proj) { return factors.containsKey(proj.key(layer)); }

    /**
     * Identifies these factors: SHA-256 over the rank and every factored projection's key and source
     * hash. Equal identities mean the same factors (a cache key for whoever shares predictors).
     */
    public String identity() {
        MessageDigest md;
        try {
            md = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
        md.update(("rank=" + rank + ";").getBytes(java.nio.charset.StandardCharsets.UTF_8));
        new java.util.TreeMap<>(sourceHashes).forEach((k, h) -> md.update((k + "=" + h + ";").getBytes(java.nio.charset.StandardCharsets.UTF_8)));
        return HexFormat.of().formatHex(md.digest());
    }

    /** Projections factored in this build (the rest came from the cache). */
    public int builtCount() { return built; }

    public int reusedCount() { return reused; }

    /** Builds (or loads from {@code cache}) the factors a resolved sparsity config needs. */
    public static SvdPredictor forConfig(WeightSource weights, SparsityConfig.Resolved sparsity, int rank,
                                         Path cache, LowRankSvd.Method method, Progress progress) {
        SortedSet<Integer> mlp = new TreeSet<>(), attn = new TreeSet<>();
        for (int i = 0; i < sparsity.mlpRatio().length; i++) {
            if (sparsity.mlpSparse(i)) mlp.add(i);
            if (sparsity.attentionSparse(i)) attn.add(i);
        }
        return build(weights, mlp, attn, rank, cache, method, progress);
    }

    /**
     * Factors gate/up of the {@code mlpLayers} and q/k/v of the {@code attnLayers}. With a cache
     * path: valid entries are reused, missing or stale ones (other rank, source hash mismatch, bad
     * shape) are rebuilt, and the cache is rewritten (atomically) when anything was rebuilt.
     */
    public static SvdPredictor build(WeightSource weights, SortedSet<Integer> mlpLayers, SortedSet<Integer> attnLayers,
                                     int rank, Path cache, LowRankSvd.Method method, Progress progress) {
        LlamaConfig cfg = weights.config();
        List<int[]> wanted = new ArrayList<>();   // (layer, proj ordinal)
        for (int layer = 0; layer < cfg.numLayers(); layer++)
            for (Proj p : Proj.values())
                if ((p.mlp() ? mlpLayers : attnLayers).contains(layer)) wanted.add(new int[] {layer, p.ordinal()});
        for (int l : mlpLayers) checkLayer(l, cfg);
        for (int l : attnLayers) checkLayer(l, cfg);

        Map<String, LowRankSvd.Factors> cached = new LinkedHashMap<>();
        Map<String, String> cachedHash = new LinkedHashMap<>();
        Map<String, DType> cachedDtype = new LinkedHashMap<>();
        if (cache != null && Files.exists(cache)) readCache(cache, rank, cached, cachedHash, cachedDtype, progress);

        Map<String, LowRankSvd.Factors> factors = new LinkedHashMap<>();
        Map<String, String> hashes = new LinkedHashMap<>();
        Map<String, DType> dtypes = new LinkedHashMap<>();
        int built = 0, reused = 0, done = 0, stale = 0;
        for (int[] lp : wanted) {
            int layer = lp[0];
            Proj p = Proj.values()[lp[1]];
            String key = p.key(layer);
            HostTensor w = weights.get(p.weightName(layer));
            int out = w.shape()[0], in = w.shape()[1];
            String hash = sha256(w);
            LowRankSvd.Factors f = cached.get(key);
            boolean fresh = false;
            if (f != null && hash.equals(cachedHash.get(key)) && f.in() == in && f.out() == out && f.rank() == rank) {
                reused++;
            } else {
                if (f != null) stale++;
                if (rank > Math.min(in, out))
                    throw new IllegalArgumentException("predictor rank " + rank + " exceeds " + p.weightName(layer) + "'s smaller side "
                            + Math.min(in, out) + " (shape " + out + "x" + in + ")");
                float[] wf = w.toFloats();
                LowRankSvd.Factors raw = LowRankSvd.factor(wf, out, in, rank, method, 0x5EEDL * 131 + layer * 8L + p.ordinal());
                f = roundTo(raw, w.dtype());
                built++;
                fresh = true;
            }
            factors.put(key, f);
            hashes.put(key, hash);
            dtypes.put(key, storageType(w.dtype()));
            progress.step(++done, wanted.size(), key + (fresh ? " (factored)" : " (cached)"));
        }
        if (stale > 0) progress.note(stale + " cached entries were stale (source weights or shape changed) and were rebuilt");
        SvdPredictor pred = new SvdPredictor(cfg, rank, Collections.unmodifiableMap(factors), hashes, dtypes, built, reused);
        if (cache != null && built > 0) {
            // keep other cached entries (other layers) that still carry the same rank
            Map<String, LowRankSvd.Factors> all = new LinkedHashMap<>(cached);
            all.putAll(factors);
            Map<String, String> allHash = new LinkedHashMap<>(cachedHash);
            allHash.putAll(hashes);
            Map<String, DType> allTypes = new LinkedHashMap<>(cachedDtype);
            allTypes.putAll(dtypes);
            writeCache(cache, rank, all, allHash, allTypes);
            progress.note("wrote " + all.size() + " factored projections to " + cache);
        }
        return pred;
    }

    /**
     * Seeded random factors of the right shapes for every projection a resolved config needs, for
     * <em>timing</em> runs on random-init models only: a predictor's cost does not depend on its
     * values, and factoring an 8B-shape model costs minutes of host time that a benchmark need not
     * spend. Never used for training; predictor quality is measured with real factors.
     */
    public static SvdPredictor randomForTiming(LlamaConfig cfg, SparsityConfig.Resolved sparsity, int rank, long seed) {
        Map<String, LowRankSvd.Factors> factors = new LinkedHashMap<>();
        Map<String, String> hashes = new LinkedHashMap<>();
        Map<String, DType> dtypes = new LinkedHashMap<>();
        for (int layer = 0; layer < cfg.numLayers(); layer++)
            for (Proj p : Proj.values()) {
                if (!(p.mlp() ? sparsity.mlpSparse(layer) : sparsity.attentionSparse(layer))) continue;
                int in = cfg.hiddenSize();
                int out = switch (p.name) {
                    case "gate_proj", "up_proj" -> cfg.intermediateSize();
                    case "q_proj" -> cfg.qDim();
                    default -> cfg.kvDim();
                };
                java.util.SplittableRandom r = new java.util.SplittableRandom(seed * 31 + layer * 8L + p.ordinal());
                float[] pf = new float[in * rank], qf = new float[rank * out];
                for (int i = 0; i < pf.length; i++) pf[i] = (float) (r.nextDouble(-1, 1) / Math.sqrt(in));
                for (int i = 0; i < qf.length; i++) qf[i] = (float) r.nextDouble(-1, 1);
                factors.put(p.key(layer), new LowRankSvd.Factors(in, out, rank, pf, qf, new double[rank]));
                hashes.put(p.key(layer), "random-for-timing-" + seed);
                dtypes.put(p.key(layer), DType.F32);
            }
        return new SvdPredictor(cfg, rank, Collections.unmodifiableMap(factors), hashes, dtypes, factors.size(), 0);
    }

    private static void checkLayer(int layer, LlamaConfig cfg) {
        if (layer < 0 || layer >= cfg.numLayers())
            throw new IllegalArgumentException("layer " + layer + " does not exist (the model has " + cfg.numLayers() + " layers)");
    }

    private static DType storageType(DType src) { return src == DType.BF16 || src == DType.F16 ? src : DType.F32; }

    /** Rounds the factors to the storage dtype, so in-memory values equal what the cache holds. */
    private static LowRankSvd.Factors roundTo(LowRankSvd.Factors f, DType dtype) {
        DType st = storageType(dtype);
        if (st == DType.F32) return f;
        float[] p = f.p().clone(), q = f.q().clone();
        for (float[] a : new float[][] {p, q})
            for (int i = 0; i < a.length; i++)
                a[i] = st == DType.BF16 ? Dtypes.bf16ToFloat(Dtypes.floatToBf16(a[i])) : Float.float16ToFloat(Float.floatToFloat16(a[i]));
        return new LowRankSvd.Factors(f.in(), f.out(), f.rank(), p, q, f.s());
    }

    /** SHA-256 over the tensor's dtype, shape and bytes. */
    static String sha256(HostTensor t) {
        MessageDigest md;
        try {
            md = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
        md.update((t.dtype().name() + java.util.Arrays.toString(t.shape())).getBytes(java.nio.charset.StandardCharsets.UTF_8));
        long bytes = t.numel() * t.dtype().bytes;
        long chunk = 1L << 28;
        for (long off = 0; off < bytes; off += chunk)
            md.update(t.data().asSlice(off, Math.min(chunk, bytes - off)).asByteBuffer());
        return HexFormat.of().formatHex(md.digest());
    }

    private static void readCache(Path cache, int rank, Map<String, LowRankSvd.Factors> out, Map<String, String> hashes,
                                  Map<String, DType> dtypes, Progress progress) {
        try (Safetensors c = Safetensors.open(cache)) {
            readEntries(c, cache, rank, out, hashes, dtypes, progress);
        } catch (RuntimeException e) {
            progress.note("cache " + cache + " is unreadable (" + e.getMessage() + "); rebuilding");
            out.clear();
            hashes.clear();
            dtypes.clear();
        }
    }

    private static void readEntries(Safetensors c, Path cache, int rank, Map<String, LowRankSvd.Factors> out, Map<String, String> hashes,
                                    Map<String, DType> dtypes, Progress progress) {
        Map<String, String> meta = c.metadata();
        if (!FORMAT.equals(meta.get("format"))) {
            progress.note("cache " + cache + " is not an SVD predictor cache (format " + meta.get("format") + "); rebuilding");
            return;
        }
        if (!String.valueOf(rank).equals(meta.get("rank"))) {
            progress.note("cache " + cache + " has rank " + meta.get("rank") + ", need " + rank + "; rebuilding");
            return;
        }
        for (Map.Entry<String, String> e : meta.entrySet()) {
            if (!e.getKey().endsWith(".sha256")) continue;
            String key = e.getKey().substring(0, e.getKey().length() - ".sha256".length());
            HostTensor p = c.has(key + ".p") ? c.get(key + ".p") : null, q = c.has(key + ".q") ? c.get(key + ".q") : null;
            if (p == null || q == null || p.shape().length != 2 || q.shape().length != 2
                    || p.shape()[1] != rank || q.shape()[0] != rank) continue;   // incomplete entry: rebuilt
            out.put(key, new LowRankSvd.Factors(p.shape()[0], q.shape()[1], rank, p.toFloats(), q.toFloats(), new double[0]));
            hashes.put(key, e.getValue());
            dtypes.put(key, p.dtype());
        }
    }

    private static void writeCache(Path cache, int rank, Map<String, LowRankSvd.Factors> factors, Map<String, String> hashes,
                                   Map<String, DType> dtypes) {
        LinkedHashMap<String, HostTensor> tensors = new LinkedHashMap<>();
        Map<String, String> meta = new LinkedHashMap<>();
        meta.put("format", FORMAT);
        meta.put("rank", String.valueOf(rank));
        Arena arena = Arena.ofAuto();
        for (Map.Entry<String, LowRankSvd.Factors> e : factors.entrySet()) {
            LowRankSvd.Factors f = e.getValue();
            DType dt = dtypes.getOrDefault(e.getKey(), DType.F32);
            tensors.put(e.getKey() + ".p", host(e.getKey() + ".p", f.p(), dt, arena, f.in(), f.rank()));
            tensors.put(e.getKey() + ".q", host(e.getKey() + ".q", f.q(), dt, arena, f.rank(), f.out()));
            meta.put(e.getKey() + ".sha256", hashes.get(e.getKey()));
        }
        Safetensors.write(cache, tensors, meta);
    }

    private static HostTensor host(String name, float[] v, DType dt, Arena arena, int... shape) {
        MemorySegment seg = arena.allocate((long) v.length * dt.bytes, 8);
        for (int i = 0; i < v.length; i++) {
            switch (dt) {
                case F32 -> seg.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), i, v[i]);
                case BF16 -> seg.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), i, Dtypes.floatToBf16(v[i]));
                case F16 -> seg.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), i, Float.floatToFloat16(v[i]));
                default -> throw new IllegalArgumentException("cannot store factors as " + dt);
            }
        }
        return new HostTensor(name, dt, shape, seg);
    }
}
