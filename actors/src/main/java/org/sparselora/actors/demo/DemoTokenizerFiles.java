package org.sparselora.actors.demo;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * {@link CharTokenizer} as HF tokenizer files, so the demo's base model directory is an ordinary
 * model directory for {@code Tokenizers.load} and the job pipeline. {@code tokenizer.json} is a BPE
 * model whose vocabulary is the special tokens plus one entry per character, with no merges and no
 * pre-tokenizer: BPE then splits any text into single characters, which is exactly the char
 * tokenizer. A {@code TemplateProcessing} post-processor puts {@code <s>} first (as Llama's does) and
 * the {@code Fuse} decoder joins tokens without separators. {@code tokenizer_config.json} names the
 * BOS/EOS/pad tokens the way transformers reads them.
 */
public final class DemoTokenizerFiles {
    public static final String PAD = "<pad>", BOS = "<s>", EOS = "</s>";

    private DemoTokenizerFiles() {}

    /** The {@code tokenizer.json} text for the demo's vocabulary. */
    public static String tokenizerJson() {
        String[] specials = {PAD, BOS, EOS};
        int[] ids = {CharTokenizer.PAD, CharTokenizer.BOS, CharTokenizer.EOS};
        ObjectNode root = CharTokenizerJson.withoutModel(specials, ids, null, BOS, CharTokenizer.BOS);
        ObjectNode model = root.putObject("model");
        model.put("type", "BPE");
        model.putNull("dropout");
        model.putNull("unk_token");
        model.putNull("continuing_subword_prefix");
        model.putNull("end_of_word_suffix");
        model.put("fuse_unk", false);
        model.put("byte_fallback", false);
        ObjectNode vocab = model.putObject("vocab");
        for (int i = 0; i < specials.length; i++) vocab.put(specials[i], ids[i]);
        for (int k = 0; k < CharTokenizer.ALPHABET.length(); k++)
            vocab.put(String.valueOf(CharTokenizer.ALPHABET.charAt(k)), CharTokenizer.OFFSET + k);
        model.putArray("merges");
        return CharTokenizerJson.text(root);
    }

    /** The {@code tokenizer_config.json} text: the special tokens by name, no chat template. */
    public static String tokenizerConfigJson() {
        ObjectNode c = CharTokenizerJson.config(BOS, EOS, PAD);
        c.put("add_bos_token", true);
        c.put("add_eos_token", false);
        c.put("model_max_length", DemoModel.SEQ_LEN + 8);
        return CharTokenizerJson.text(c);
    }

    /** Writes both files into {@code dir} unless they are already there with this content. */
    public static void ensure(Path dir) {
        put(dir.resolve("tokenizer.json"), tokenizerJson());
        put(dir.resolve("tokenizer_config.json"), tokenizerConfigJson());
    }

    private static void put(Path file, String text) {
        try {
            if (Files.isRegularFile(file) && Files.readString(file, StandardCharsets.UTF_8).equals(text)) return;
        } catch (IOException e) {
            // unreadable: rewrite it below
        }
        CharTokenizerJson.write(file, text);
    }
}
