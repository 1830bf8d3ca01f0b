package org.sparselora.actors.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.sparselora.engine.eval.Scorer;
import org.sparselora.engine.io.FormatException;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code sparselora score}: the mean next-token cross-entropy (nats) of each text of a JSONL file
 * under the base model, or the base model plus a PEFT adapter. The ids are the tokenizer's encoding
 * exactly as HF {@code tokenizer(text)} gives it, truncated to {@code --max-tokens}; one JSON line
 * per record, then a summary line with the mean over records. Lines that are not a JSON object
 * with a string field are reported on stderr with their line numbers and skipped.
 */
@Command(name = "score", mixinStandardHelpOptions = true,
        description = {"Score texts: mean next-token cross-entropy (nats) per record of a JSONL file.",
                "Prints {\"index\": i, \"tokens\": n, \"loss\": x} per record, then {\"records\": N, \"mean_loss\": m}.",
                "A record of fewer than 2 tokens has nothing to predict: it is listed as skipped and left out of the mean.",
                "A NaN or infinite loss makes the exit status 1 (--allow-nonfinite accepts it)."})
public final class ScoreCommand implements Callable<Integer> {

    @Mixin
    ModelOptions models;

    @Mixin
    AdapterOption adapter;

    @Option(names = "--data", required = true, paramLabel = "FILE.jsonl", description = "one JSON object per line")
    Path data;

    @Option(names = "--field", defaultValue = "text", description = "the records' text field (default: ${DEFAULT-VALUE})")
    String field;

    @Option(names = "--max-tokens", defaultValue = "256", description = "truncate each encoding to this many ids (default: ${DEFAULT-VALUE})")
    int maxTokens;

    @Mixin
    DeviceOption device;

    @Option(names = "--allow-nonfinite", description = "exit 0 even when a loss is NaN or infinite (printed as null)")
    boolean allowNonFinite;

    // one JSON value per line: "{...} garbage" is a malformed line, not a record
    private static final ObjectMapper JSON = new ObjectMapper().enable(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    /** A text with the 1-based line it came from. */
    record Text(int line, String text) {}

    @Override
    public Integer call() {
        if (maxTokens < 2) throw new IllegalArgumentException("--max-tokens must be at least 2, got " + maxTokens);
        List<Text> texts = readTexts(data, field, System.err);
        try (ModelOptions.Opened m = models.open()) {
            return m.run(device, adapter, (model, lora) -> {
                Scorer scorer = new Scorer(model, lora, m.tok(), maxTokens);
                PrintStream out = System.out;
                double sum = 0;
                int scored = 0, skipped = 0;
                List<String> nonFinite = new ArrayList<>();
                for (int i = 0; i < texts.size(); i++) {
                    Scorer.Score s = scorer.score(texts.get(i).text());
                    if (!s.scored()) {
                        // a loss of 0 here would pull the mean down: such records are listed and left out
                        skipped++;
                        out.println("{\"index\": " + i + ", \"tokens\": " + s.tokens() + ", \"skipped\": \"fewer than 2 tokens: nothing to predict\"}");
                        System.err.println(data + " line " + texts.get(i).line() + ": " + s.tokens() + " token(s), nothing to predict (skipped, not in the mean)");
                        continue;
                    }
                    if (!Double.isFinite(s.loss())) nonFinite.add("record " + i + " (line " + texts.get(i).line() + ")");
                    scored++;
                    sum += s.loss();
                    out.println("{\"index\": " + i + ", \"tokens\": " + s.tokens() + ", \"loss\": " + number(s.loss()) + "}");
                }
                // "records" counts the records in the mean; skipped ones are counted apart
                out.println("{\"records\": " + scored + (skipped > 0 ? ", \"skipped\": " + skipped : "")
                        + ", \"mean_loss\": " + number(scored == 0 ? Double.NaN : sum / scored) + "}");
                out.flush();
                if (!nonFinite.isEmpty() && !allowNonFinite) {
                    System.err.println("score: the loss is not a finite number for " + nonFinite.size() + " record(s), first "
                            + nonFinite.get(0) + ": the model's weights or config.json produce NaN/inf (pass --allow-nonfinite to accept)");
                    return 1;
                }
                if (scored == 0 && !texts.isEmpty()) {
                    System.err.println("score: no record has 2 or more tokens: nothing was scored");
                    return 1;
                }
                return 0;
            });
        }
    }

    /** JSON has no NaN/Infinity: those are written as null. */
    static String number(double x) { return Double.isFinite(x) ? Double.toString(x) : "null"; }

    /**
     * The texts of a JSONL file; a line that is not a JSON object with a string {@code field} is
     * reported ({@code FILE line N: problem}) on {@code err} and skipped; blank lines are ignored.
     */
    static List<Text> readTexts(Path file, String field, PrintStream err) {
        if (!Files.isRegularFile(file)) throw new FormatException(file, "no such file (--data takes a JSONL file)");
        List<Text> texts = new ArrayList<>();
        int skipped = 0;
        try (BufferedReader r = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
            String line;
            int n = 0;
            while ((line = r.readLine()) != null) {
                n++;
                if (line.isBlank()) continue;
                String problem;
                try {
                    JsonNode node = JSON.readTree(line);
                    if (node == null || !node.isObject()) problem = "not a JSON object";
                    else if (!node.has(field)) problem = "no \"" + field + "\" field";
                    else if (!node.get(field).isTextual()) problem = "\"" + field + "\" is not a string";
                    else {
                        texts.add(new Text(n, node.get(field).asText()));
                        continue;
                    }
                } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
                    problem = "not valid JSON (" + org.sparselora.engine.io.JsonErrors.kind(e) + ")";
                }
                skipped++;
                err.println(String.format(Locale.ROOT, "%s line %d: %s (skipped)", file, n, problem));
            }
        } catch (CharacterCodingException e) {
            throw new FormatException(file, "not UTF-8 text");
        } catch (IOException e) {
            throw new FormatException(file, "cannot read: " + e.getMessage());
        }
        if (skipped > 0) err.println(file + ": " + skipped + " malformed line" + (skipped == 1 ? "" : "s") + " skipped, " + texts.size() + " records scored");
        return texts;
    }
}
