package org.sparselora.arcagi;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.sparselora.actors.demo.CharTokenizerJson;
import org.sparselora.engine.tokenizer.Tokenizer;

/**
 * The ARC grid vocabulary: one token per cell colour, a row end, the input/output markers and the
 * special tokens — 16 ids in all. Text form (what HF tokenizers sees): colours are the digits
 * {@code 0}–{@code 9}, a row ends with {@code \n}, {@code I} opens an input grid, {@code O} an
 * output grid, {@code <s>}/{@code </s>}/{@code <pad>} are BOS/EOS/padding. Every character is one
 * token, so ids and text convert both ways without ambiguity.
 *
 * <p>{@link #writeFiles} saves the same vocabulary as a HF {@code tokenizer.json} (a WordLevel model
 * behind a pre-tokenizer that isolates every character, BOS added by the post-processor, a Fuse
 * decoder) plus {@code tokenizer_config.json}, so the engine's HF tokenizer, {@code generate},
 * {@code score} and transformers read the model directory with exactly these ids.
 */
public final class ArcTokenizer implements Tokenizer {
    public static final int PAD = 0, BOS = 1, EOS = 2, COLOR0 = 3, ROW_END = 13, INPUT = 14, OUTPUT = 15, VOCAB = 16;
    public static final String PAD_TEXT = "<pad>", BOS_TEXT = "<s>", EOS_TEXT = "</s>";

    private static final String[] TEXT = new String[VOCAB];

    static {
        TEXT[PAD] = PAD_TEXT;
        TEXT[BOS] = BOS_TEXT;
        TEXT[EOS] = EOS_TEXT;
        for (int c = 0; c < 10; c++) TEXT[COLOR0 + c] = String.valueOf((char) ('0' + c));
        TEXT[ROW_END] = "\n";
        TEXT[INPUT] = "I";
        TEXT[OUTPUT] = "O";
    }

    public static boolean isSpecial(int id) { return id == PAD || id == BOS || id == EOS; }

    /** The token of colour {@code c} (0–9). */
    public static int color(int c) { return COLOR0 + c; }

    /** The colour of a cell token, or -1 for any other id. */
    public static int colorOf(int id) { return id >= COLOR0 && id < COLOR0 + 10 ? id - COLOR0 : -1; }

    @Override
    public int[] encode(String text, boolean addSpecial) {
        int[] out = new int[text.length() + 1];
        int n = 0;
        if (addSpecial) out[n++] = BOS;
        for (int i = 0; i < text.length(); ) {
            int special = specialAt(text, i);
            if (special >= 0) {
                out[n++] = special;
                i += TEXT[special].length();
                continue;
            }
            char ch = text.charAt(i);
            int id = ch >= '0' && ch <= '9' ? COLOR0 + ch - '0' : ch == '\n' ? ROW_END : ch == 'I' ? INPUT : ch == 'O' ? OUTPUT : -1;
            if (id < 0) throw new IllegalArgumentException("ARC tokenizer: character " + describe(ch) + " at " + i
                    + " is not in the vocabulary (digits 0-9, newline, I, O, <s>, </s>, <pad>)");
            out[n++] = id;
            i++;
        }
        return java.util.Arrays.copyOf(out, n);
    }

    private static int specialAt(String text, int i) {
        for (int id : new int[] {PAD, BOS, EOS}) if (text.startsWith(TEXT[id], i)) return id;
        return -1;
    }

    private static String describe(char ch) { return ch < 32 || ch > 126 ? String.format("U+%04X", (int) ch) : "'" + ch + "'"; }

    @Override
    public String decode(int[] ids) {
        StringBuilder sb = new StringBuilder();
        for (int id : ids) if (!isSpecial(check(id))) sb.append(TEXT[id]);
        return sb.toString();
    }

    /** The text of {@code ids} with the special tokens kept (what {@link #encode} reads back to the same ids). */
    public String decodeWithSpecial(int[] ids) {
        StringBuilder sb = new StringBuilder();
        for (int id : ids) sb.append(TEXT[check(id)]);
        return sb.toString();
    }

    @Override
    public String decodeToken(int id) { return TEXT[check(id)]; }

    private static int check(int id) {
        if (id < 0 || id >= VOCAB) throw new IllegalArgumentException("ARC tokenizer: token id " + id + " out of range [0, " + VOCAB + ")");
        return id;
    }

    @Override public int bosId() { return BOS; }

    @Override public int eosId() { return EOS; }

    @Override public int padId() { return PAD; }

    @Override public int vocabSize() { return VOCAB; }

    // ---- HF files -------------------------------------------------------------------------------

    /** The {@code tokenizer.json} text. */
    public static String tokenizerJson() {
        // every character its own word: no whitespace handling at all (rows end in a newline token)
        ObjectNode pre = CharTokenizerJson.object();
        pre.put("type", "Split");
        pre.putObject("pattern").put("Regex", "[\\s\\S]");
        pre.put("behavior", "Isolated");
        pre.put("invert", false);
        ObjectNode root = CharTokenizerJson.withoutModel(new String[] {TEXT[PAD], TEXT[BOS], TEXT[EOS]}, new int[] {PAD, BOS, EOS}, pre, BOS_TEXT, BOS);
        ObjectNode model = root.putObject("model");
        model.put("type", "WordLevel");
        ObjectNode vocab = model.putObject("vocab");
        for (int id = 0; id < VOCAB; id++) vocab.put(TEXT[id], id);
        model.put("unk_token", PAD_TEXT);
        return CharTokenizerJson.text(root);
    }

    /** The {@code tokenizer_config.json} text: the special tokens by name, as transformers reads them. */
    public static String tokenizerConfigJson(int modelMaxLength) {
        ObjectNode c = CharTokenizerJson.config(BOS_TEXT, EOS_TEXT, PAD_TEXT);
        c.put("unk_token", PAD_TEXT);
        c.put("add_bos_token", true);
        c.put("add_eos_token", false);
        c.put("clean_up_tokenization_spaces", false);
        c.put("model_max_length", modelMaxLength);
        return CharTokenizerJson.text(c);
    }

    /** Writes {@code tokenizer.json} and {@code tokenizer_config.json} into {@code dir} (each atomically). */
    public static void writeFiles(Path dir, int modelMaxLength) {
        try {
            Files.createDirectories(dir);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create " + dir + ": " + e.getMessage(), e);
        }
        CharTokenizerJson.write(dir.resolve("tokenizer.json"), tokenizerJson());
        CharTokenizerJson.write(dir.resolve("tokenizer_config.json"), tokenizerConfigJson(modelMaxLength));
    }

}
