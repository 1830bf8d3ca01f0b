package org.sparselora.actors.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.Callable;
import org.sparselora.engine.data.DatasetFormat;
import org.sparselora.engine.data.DatasetReader;
import org.sparselora.engine.data.PromptTemplate;
import org.sparselora.engine.eval.EvalTask;
import org.sparselora.engine.eval.GenerationEval;
import org.sparselora.engine.io.AtomicFiles;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code sparselora eval}: accuracy by generation, the measure the method's accuracy claims are made
 * in. Each record's prompt (rendered with the same template as training) is continued greedily with
 * the base model (plus an optional PEFT adapter), the task extracts the answer (the final number for
 * math sets, the trimmed text for exact match, the first grid for ARC) and compares it with the
 * record's expected answer. One JSON line per record on stdout, then a summary line; {@code --out}
 * also writes the summary with every record to a JSON file.
 */
@Command(name = "eval", mixinStandardHelpOptions = true,
        description = {"Evaluate by generation: accuracy of greedy answers against each record's expected answer.",
                "Prints {\"line\": n, \"correct\": b, \"answer\": …, \"expected\": …} per record, then {\"accuracy\": a, …}."})
public final class EvalCommand implements Callable<Integer> {

    @Mixin
    ModelOptions models;

    @Mixin
    AdapterOption adapter;

    @Option(names = "--data", required = true, paramLabel = "FILE", description = "dataset file (JSON array or JSONL; alpaca, gsm8k or prompt/completion records)")
    Path data;

    @Option(names = "--format", paramLabel = "F", description = "record format: alpaca, gsm8k, prompt_completion (default: detected from the first record)")
    String format;

    @Option(names = "--template", defaultValue = "llm-adapters", paramLabel = "NAME",
            description = "prompt template for instruction records, as in training (default: ${DEFAULT-VALUE})")
    String template;

    @Option(names = "--task", required = true, paramLabel = "gsm8k|exact|arc",
            description = "answer extraction: gsm8k (last number, within 1e-3), exact (trimmed text), arc (first grid)")
    String task;

    @Option(names = "--max-new-tokens", defaultValue = "256", paramLabel = "N", description = "most tokens generated per record (default: ${DEFAULT-VALUE})")
    int maxNewTokens;

    @Option(names = "--limit", defaultValue = "0", paramLabel = "N", description = "evaluate only the first N records (default: all)")
    int limit;

    @Option(names = "--out", paramLabel = "FILE.json", description = "also write the summary and every record to this JSON file")
    Path out;

    @Mixin
    DeviceOption device;

    private static final ObjectMapper JSON = new ObjectMapper();

    @Override
    public Integer call() throws Exception {
        EvalTask t = EvalTask.parse(task);
        if (maxNewTokens < 1) throw new IllegalArgumentException("--max-new-tokens must be at least 1, got " + maxNewTokens);
        if (limit < 0) throw new IllegalArgumentException("--limit must be >= 0, got " + limit);
        DatasetFormat fmt = format == null ? null : DatasetFormat.parse(format);
        DatasetReader.Dataset ds = DatasetReader.read(data, fmt, new DatasetReader.Options(PromptTemplate.parse(template), "text"));
        if (ds.format() == DatasetFormat.TEXT)
            throw new IllegalArgumentException(data + ": plain-text records have no prompt and answer to evaluate (use alpaca, gsm8k or prompt_completion records)");
        if (ds.report() != null) System.err.println(ds.report());
        var examples = limit > 0 && limit < ds.examples().size() ? ds.examples().subList(0, limit) : ds.examples();
        PrintStream so = System.out;
        GenerationEval.Summary sum;
        try (ModelOptions.Opened m = models.open()) {
            sum = m.run(device, adapter, (model, lora) -> new GenerationEval(model, lora, m.tok(), t, maxNewTokens).evaluateAll(examples, r -> {
                so.println(JSON.valueToTree(recordJson(r)).toString());
                so.flush();
            }));
        }
        ObjectNode s = summaryJson(sum, t);
        so.println(s.toString());
        so.flush();
        if (out != null) {
            ObjectNode full = s.deepCopy();
            var arr = full.putArray("records");
            for (GenerationEval.Record r : sum.details()) arr.add(JSON.valueToTree(recordJson(r)));
            byte[] bytes = JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(full);
            AtomicFiles.writeFile(out, tmp -> java.nio.file.Files.write(tmp, bytes));
        }
        return 0;
    }

    static Map<String, Object> recordJson(GenerationEval.Record r) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("line", r.line());
        if (r.skipped() != null) {
            m.put("skipped", r.skipped());
            return m;
        }
        m.put("correct", r.correct());
        m.put("answer", r.extracted());
        m.put("expected", r.expected());
        m.put("generated", r.generated());
        return m;
    }

    static ObjectNode summaryJson(GenerationEval.Summary s, EvalTask t) {
        ObjectNode n = JSON.createObjectNode();
        n.put("task", t.id());
        n.put("records", s.records());
        n.put("evaluated", s.evaluated());
        n.put("correct", s.correct());
        n.put("skipped", s.skipped());
        if (Double.isFinite(s.accuracy())) n.put("accuracy", s.accuracy());
        else n.putNull("accuracy");
        return n;
    }
}
