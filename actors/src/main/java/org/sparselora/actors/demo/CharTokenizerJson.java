package org.sparselora.actors.demo;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.sparselora.engine.io.AtomicFiles;

/**
 * The HF {@code tokenizer.json} / {@code tokenizer_config.json} parts shared by the project's
 * one-token-per-character tokenizers (the demo's and the ARC grids'): special tokens, a
 * {@code TemplateProcessing} post-processor that puts BOS first (as Llama's does) and the
 * {@code Fuse} decoder that joins tokens without separators. Each tokenizer adds its own
 * pre-tokenizer and model.
 */
public final class CharTokenizerJson {

    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private CharTokenizerJson() {}

    /**
     * A {@code tokenizer.json} up to its {@code model}: the special tokens ({@code ids[i]} is
     * {@code specials[i]}), {@code preTokenizer} (null: none), BOS first, the Fuse decoder.
     */
    public static ObjectNode withoutModel(String[] specials, int[] ids, ObjectNode preTokenizer, String bos, int bosId) {
        ObjectNode root = JSON.createObjectNode();
        root.put("version", "1.0");
        root.putNull("truncation");
        root.putNull("padding");
        ArrayNode added = root.putArray("added_tokens");
        for (int i = 0; i < specials.length; i++) {
            ObjectNode t = added.addObject();
            t.put("id", ids[i]);
            t.put("content", specials[i]);
            t.put("single_word", false);
            t.put("lstrip", false);
            t.put("rstrip", false);
            t.put("normalized", false);
            t.put("special", true);
        }
        root.putNull("normalizer");
        if (preTokenizer == null) root.putNull("pre_tokenizer");
        else root.set("pre_tokenizer", preTokenizer);
        ObjectNode pp = root.putObject("post_processor");
        pp.put("type", "TemplateProcessing");
        ArrayNode single = pp.putArray("single");
        single.addObject().putObject("SpecialToken").put("id", bos).put("type_id", 0);
        single.addObject().putObject("Sequence").put("id", "A").put("type_id", 0);
        ArrayNode pair = pp.putArray("pair");
        pair.addObject().putObject("SpecialToken").put("id", bos).put("type_id", 0);
        pair.addObject().putObject("Sequence").put("id", "A").put("type_id", 0);
        pair.addObject().putObject("Sequence").put("id", "B").put("type_id", 1);
        ObjectNode st = pp.putObject("special_tokens").putObject(bos);
        st.put("id", bos);
        st.putArray("ids").add(bosId);
        st.putArray("tokens").add(bos);
        root.putObject("decoder").put("type", "Fuse");
        return root;
    }

    /** A {@code tokenizer_config.json} that names the special tokens the way transformers reads them; the caller adds the rest. */
    public static ObjectNode config(String bos, String eos, String pad) {
        ObjectNode c = JSON.createObjectNode();
        c.put("tokenizer_class", "PreTrainedTokenizerFast");
        c.put("bos_token", bos);
        c.put("eos_token", eos);
        c.put("pad_token", pad);
        return c;
    }

    /** An empty JSON object (for a pre-tokenizer). */
    public static ObjectNode object() {
        return JSON.createObjectNode();
    }

    /** The file text: indented JSON and a final newline. */
    public static String text(ObjectNode n) {
        try {
            return JSON.writeValueAsString(n) + "\n";
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Writes {@code text} to {@code file} atomically (temp file + rename). */
    public static void write(Path file, String text) {
        AtomicFiles.writeFile(file, tmp -> Files.writeString(tmp, text, StandardCharsets.UTF_8));
    }
}
