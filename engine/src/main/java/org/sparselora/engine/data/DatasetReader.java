package org.sparselora.engine.data;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.PushbackReader;
import java.io.Reader;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Collectors;
import org.sparselora.engine.io.FormatException;
import org.sparselora.engine.io.JsonErrors;

/**
 * Reads a dataset file (a JSON array of records, or JSONL: one record per line) into
 * {@link Example}s. A record that cannot be used (a line that is not JSON, not an object, a missing
 * field, a field of the wrong type) is skipped and remembered with its line number; the caller
 * prints {@link Dataset#report()} once. Only a file that cannot be read at all (missing, not UTF-8,
 * a JSON array that breaks off, no usable record) is an error, naming the file and the problem.
 */
public final class DatasetReader {

    // one JSON value per line: anything after it on the line is an error, not silently dropped
    private static final ObjectMapper JSON = new ObjectMapper().enable(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
    /** Reads the records of a JSON array one by one (the array itself is checked for what follows it). */
    private static final ObjectMapper STREAM = new ObjectMapper();

    /** A record that was skipped, and why. */
    public record Malformed(int line, String reason) {}

    /** The usable records of a file and the skipped ones. */
    public record Dataset(Path file, DatasetFormat format, List<Example> examples, List<Malformed> malformed) {
        /** One line for the log, or null when nothing was skipped. */
        public String report() {
            if (malformed.isEmpty()) return null;
            int shown = Math.min(malformed.size(), 20);
            String lines = malformed.subList(0, shown).stream().map(m -> Integer.toString(m.line()))
                    .collect(Collectors.joining(", "));
            Malformed first = malformed.get(0);
            return file + ": skipped " + malformed.size() + " malformed record(s) at line(s) " + lines
                    + (malformed.size() > shown ? ", ..." : "") + " (line " + first.line() + ": " + first.reason() + ")";
        }
    }

    /** Options: the template for instruction formats and the text field for {@link DatasetFormat#TEXT}. */
    public record Options(PromptTemplate template, String textField) {
        public static final Options DEFAULT = new Options(PromptTemplate.LLM_ADAPTERS, "text");
    }

    private DatasetReader() {}

    /** Reads {@code file}; {@code format} null detects it from the first record. */
    public static Dataset read(Path file, DatasetFormat format, Options options) {
        if (!Files.isRegularFile(file)) throw new FormatException(file, "dataset file not found");
        if (!Files.isReadable(file)) throw new FormatException(file, "dataset file is not readable");
        List<Example> out = new ArrayList<>();
        List<Malformed> bad = new ArrayList<>();
        DatasetFormat[] fmt = {format};
        try (BufferedReader r = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
            PushbackReader pr = new PushbackReader(r, 1);
            int c;
            int skipped = 0;   // leading blank lines, so reported line numbers stay those of the file
            do {
                c = pr.read();
                if (c == '\n') skipped++;
            } while (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\uFEFF');
            if (c == -1) throw new FormatException(file, "dataset file is empty");
            pr.unread(c);
            if (c == '[') readArray(file, pr, skipped, fmt, options, out, bad);
            else readLines(file, pr, skipped, fmt, options, out, bad);
        } catch (CharacterCodingException e) {
            throw new FormatException(file, "dataset file is not valid UTF-8");
        } catch (IOException e) {
            throw new FormatException(file, "cannot read dataset file: " + e.getMessage());
        }
        if (out.isEmpty())
            throw new FormatException(file, "no usable records" + (bad.isEmpty() ? ""
                    : " (" + bad.size() + " malformed, first at line " + bad.get(0).line() + ": " + bad.get(0).reason() + ")"));
        return new Dataset(file, fmt[0], List.copyOf(out), List.copyOf(bad));
    }

    private static void readLines(Path file, Reader r, int lineOffset, DatasetFormat[] fmt, Options o, List<Example> out,
                                  List<Malformed> bad) throws IOException {
        BufferedReader br = new BufferedReader(r);
        String line;
        int no = lineOffset;
        while ((line = br.readLine()) != null) {
            no++;
            if (line.isBlank()) continue;
            JsonNode n;
            try {
                n = JSON.readTree(line);
            } catch (JsonProcessingException e) {
                bad.add(new Malformed(no, JsonErrors.describe(e).replaceFirst(" at line \\d+,", " at")));
                continue;
            }
            accept(n, no, fmt, o, out, bad);
        }
    }

    private static void readArray(Path file, Reader r, int lineOffset, DatasetFormat[] fmt, Options o, List<Example> out,
                                  List<Malformed> bad) throws IOException {
        try (JsonParser p = new JsonFactory(STREAM).createParser(r)) {
            p.nextToken(); // START_ARRAY
            JsonToken t;
            while ((t = p.nextToken()) != JsonToken.END_ARRAY) {
                if (t == null) throw new FormatException(file, "JSON array is not closed (file truncated?)");
                int line = lineOffset + p.currentTokenLocation().getLineNr();
                JsonNode n = p.readValueAsTree();
                accept(n, line, fmt, o, out, bad);
            }
            if (p.nextToken() != null)
                throw new FormatException(file, "unexpected content after the JSON array at line "
                        + (lineOffset + p.currentTokenLocation().getLineNr()));
        } catch (JsonProcessingException e) {
            throw new FormatException(file, "invalid JSON at line "
                    + (e.getLocation() == null ? "?" : Integer.toString(lineOffset + e.getLocation().getLineNr())) + ": "
                    + JsonErrors.kind(e));
        }
    }

    private static void accept(JsonNode n, int line, DatasetFormat[] fmt, Options o, List<Example> out, List<Malformed> bad) {
        if (n == null || !n.isObject()) {
            bad.add(new Malformed(line, "record is not a JSON object"));
            return;
        }
        if (fmt[0] == null) {
            fmt[0] = DatasetFormat.detect(n, o.textField());
            if (fmt[0] == null) {
                bad.add(new Malformed(line, "record fits no format (fields: " + fieldNames(n) + ")"));
                return;
            }
        }
        try {
            out.add(toExample(n, line, fmt[0], o));
        } catch (BadRecord e) {
            bad.add(new Malformed(line, e.getMessage()));
        }
    }

    private static final class BadRecord extends Exception {
        BadRecord(String m) { super(m, null, false, false); }
    }

    static Example toExample(JsonNode n, int line, DatasetFormat f, Options o) throws BadRecord {
        return switch (f) {
            case ALPACA -> {
                String instruction = str(n, "instruction", true);
                String input = str(n, "input", false);
                String output = str(n, "output", true);
                String answer = n.has("answer") && !n.get("answer").isNull() ? scalar(n, "answer") : null;
                yield new Example(o.template().prompt(instruction, input == null ? "" : input), output, answer, line);
            }
            case GSM8K -> {
                String q = str(n, "question", true);
                String a = str(n, "answer", true);
                int hash = a.lastIndexOf("####");
                if (hash < 0) throw new BadRecord("field 'answer' has no final '#### N' line");
                String finalAnswer = a.substring(hash + 4).trim().replace(",", "");
                if (finalAnswer.isEmpty()) throw new BadRecord("field 'answer' has an empty '####' line");
                yield new Example(o.template().prompt(q, ""), a, finalAnswer, line);
            }
            case TEXT -> new Example("", str(n, o.textField(), true), null, line);
            case PROMPT_COMPLETION -> {
                String prompt = str(n, "prompt", true);
                String completion = str(n, "completion", true);
                String answer = n.has("answer") && !n.get("answer").isNull() ? scalar(n, "answer") : completion;
                yield new Example(prompt, completion, answer, line);
            }
        };
    }

    private static String str(JsonNode n, String field, boolean required) throws BadRecord {
        JsonNode v = n.get(field);
        if (v == null || v.isNull()) {
            if (required) throw new BadRecord("missing field '" + field + "'");
            return null;
        }
        if (!v.isTextual()) throw new BadRecord("field '" + field + "' is " + v.getNodeType().name().toLowerCase() + ", not a string");
        return v.textValue();
    }

    private static String scalar(JsonNode n, String field) throws BadRecord {
        JsonNode v = n.get(field);
        if (v.isTextual()) return v.textValue();
        if (v.isNumber() || v.isBoolean()) return v.asText();
        throw new BadRecord("field '" + field + "' is " + v.getNodeType().name().toLowerCase() + ", not a string or number");
    }

    private static String fieldNames(JsonNode n) {
        List<String> names = new ArrayList<>();
        n.fieldNames().forEachRemaining(names::add);
        return String.join(", ", names);
    }
}
