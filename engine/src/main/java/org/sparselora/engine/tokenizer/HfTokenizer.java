package org.sparselora.engine.tokenizer;

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Iterator;
import java.util.Map;
import org.sparselora.engine.io.FormatException;

/**
 * A HF {@code tokenizer.json} run by the HF tokenizers library itself (through DJL's binding, whose
 * jar carries the native library: no network needed), so normalisation, pre-tokenisation, BPE and
 * the post-processor (BOS and the like) are exactly HF's. DJL's own defaults (truncation to 512,
 * padding) are switched off so {@code encode(text, true)} equals {@code tokenizer(text)}.
 *
 * <p>BOS/EOS/pad come from {@code tokenizer_config.json} next to the file when present (as
 * transformers reads them), else from {@code config.json}'s {@code *_token_id}, else BOS is the
 * special token the post-processor puts first. Ids of token strings come from the file's vocabulary
 * and added tokens, read once with Jackson.
 */
public final class HfTokenizer implements Tokenizer {

    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path file;
    private final HuggingFaceTokenizer tokenizer;
    private final Map<String, Integer> vocab;
    private final int vocabSize;
    private final int bos, eos, pad;

    private HfTokenizer(Path file, HuggingFaceTokenizer tokenizer, Map<String, Integer> vocab, int vocabSize,
                        int bos, int eos, int pad) {
        this.file = file;
        this.tokenizer = tokenizer;
        this.vocab = vocab;
        this.vocabSize = vocabSize;
        this.bos = bos;
        this.eos = eos;
        this.pad = pad;
    }

    /** Loads {@code tokenizer.json} (or a directory holding it). */
    public static HfTokenizer load(Path path) {
        Path file = Files.isDirectory(path) ? path.resolve("tokenizer.json") : path;
        if (!Files.isRegularFile(file)) throw new FormatException(file, "tokenizer file not found");
        JsonNode root;
        try {
            root = JSON.readTree(file.toFile());
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new FormatException(file, "not a valid tokenizer.json: " + org.sparselora.engine.io.JsonErrors.describe(e));
        } catch (IOException e) {
            throw new FormatException(file, "cannot read: " + e.getMessage().lines().findFirst().orElse(""));
        }
        if (root == null || !root.isObject() || !root.has("model"))
            throw new FormatException(file, "not a HF tokenizer.json (no \"model\" section)");
        Map<String, Integer> vocab = new HashMap<>();
        int maxId = readVocab(root.get("model"), vocab);
        for (JsonNode t : root.path("added_tokens")) {
            int id = t.path("id").asInt(-1);
            String content = t.path("content").asText(null);
            if (id < 0 || content == null) continue;
            vocab.put(content, id);
            maxId = Math.max(maxId, id);
        }
        Path dir = file.toAbsolutePath().getParent();
        JsonNode tcfg = readOptional(dir.resolve("tokenizer_config.json"));
        JsonNode mcfg = readOptional(dir.resolve("config.json"));
        int bos = specialId(vocab, tcfg, "bos_token", mcfg, "bos_token_id");
        if (bos < 0 && tcfg == null) bos = firstSpecialOfTemplate(root.get("post_processor"), vocab);
        int eos = specialId(vocab, tcfg, "eos_token", mcfg, "eos_token_id");
        int pad = specialId(vocab, tcfg, "pad_token", mcfg, "pad_token_id");

        HuggingFaceTokenizer tok;
        try {
            Map<String, String> options = new HashMap<>();
            options.put("addSpecialTokens", "true");
            options.put("truncation", "false");
            options.put("padding", "false");
            options.put("withOverflowingTokens", "false");
            tok = HuggingFaceTokenizer.newInstance(file, options);
        } catch (IOException | RuntimeException e) {
            throw new FormatException(file, "the HF tokenizers library rejected this tokenizer.json: " + e.getMessage());
        }
        return new HfTokenizer(file, tok, vocab, maxId + 1, bos, eos, pad);
    }

    private static int readVocab(JsonNode model, Map<String, Integer> vocab) {
        int maxId = -1;
        JsonNode v = model.get("vocab");
        if (v == null) return maxId;
        if (v.isObject()) {             // BPE, WordPiece, WordLevel: {token: id}
            for (Iterator<Map.Entry<String, JsonNode>> it = v.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                int id = e.getValue().asInt();
                vocab.put(e.getKey(), id);
                maxId = Math.max(maxId, id);
            }
        } else if (v.isArray()) {       // Unigram: [[piece, score], ...], id = position
            for (int i = 0; i < v.size(); i++) vocab.putIfAbsent(v.get(i).path(0).asText(), i);
            maxId = v.size() - 1;
        }
        return maxId;
    }

    private static JsonNode readOptional(Path p) {
        if (!Files.isRegularFile(p)) return null;
        try {
            return JSON.readTree(p.toFile());
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new FormatException(p, org.sparselora.engine.io.JsonErrors.describe(e));
        } catch (IOException e) {
            throw new FormatException(p, "cannot read: " + e.getMessage().lines().findFirst().orElse(""));
        }
    }

    /** tokenizer_config's token (a string or {"content": ...}), else config.json's id, else -1. */
    private static int specialId(Map<String, Integer> vocab, JsonNode tcfg, String key, JsonNode mcfg, String idKey) {
        if (tcfg != null && tcfg.has(key)) {
            JsonNode n = tcfg.get(key);
            String s = n.isTextual() ? n.textValue() : n.isObject() ? n.path("content").asText(null) : null;
            if (s != null && vocab.containsKey(s)) return vocab.get(s);
            if (n.isNull()) return -1;
        }
        if (mcfg != null && mcfg.has(idKey)) {
            JsonNode n = mcfg.get(idKey);
            if (n.isArray() && !n.isEmpty()) return n.get(0).asInt();
            if (n.canConvertToInt()) return n.asInt();
        }
        return -1;
    }

    /** The special token a TemplateProcessing post-processor puts first in a single sequence. */
    private static int firstSpecialOfTemplate(JsonNode pp, Map<String, Integer> vocab) {
        if (pp == null || pp.isNull()) return -1;
        if ("Sequence".equals(pp.path("type").asText())) {
            for (JsonNode p : pp.path("processors")) {
                int id = firstSpecialOfTemplate(p, vocab);
                if (id >= 0) return id;
            }
            return -1;
        }
        if (!"TemplateProcessing".equals(pp.path("type").asText())) return -1;
        JsonNode first = pp.path("single").path(0);
        if (!first.has("SpecialToken")) return -1;
        String tokenName = first.path("SpecialToken").path("id").asText();
        JsonNode ids = pp.path("special_tokens").path(tokenName).path("ids");
        if (ids.isArray() && ids.size() == 1) return ids.get(0).asInt();
        return vocab.getOrDefault(tokenName, -1);
    }

    @Override
    public int[] encode(String text, boolean addSpecial) {
        long[] ids = tokenizer.encode(text, addSpecial, false).getIds();
        int[] out = new int[ids.length];
        for (int i = 0; i < ids.length; i++) out[i] = (int) ids[i];
        return out;
    }

    @Override
    public String decode(int[] ids) {
        return tokenizer.decode(toLongs(ids), true);
    }

    /** Like {@link #decode} but keeping special tokens, as HF's default {@code decode} does. */
    public String decodeWithSpecial(int[] ids) {
        return tokenizer.decode(toLongs(ids), false);
    }

    @Override
    public String decodeToken(int id) {
        return tokenizer.decode(new long[] {id}, false);
    }

    private long[] toLongs(int[] ids) {
        long[] l = new long[ids.length];
        for (int i = 0; i < ids.length; i++) {
            if (ids[i] < 0 || ids[i] >= vocabSize)
                throw new IllegalArgumentException("token id " + ids[i] + " out of range [0, " + vocabSize + ")");
            l[i] = ids[i];
        }
        return l;
    }

    /** The id of a token string (vocabulary or added token), or -1. */
    public int tokenId(String token) { return vocab.getOrDefault(token, -1); }

    public Path file() { return file; }

    @Override public int bosId() { return bos; }

    @Override public int eosId() { return eos; }

    @Override public int padId() { return pad; }

    @Override public int vocabSize() { return vocabSize; }

    @Override
    public void close() { tokenizer.close(); }
}
