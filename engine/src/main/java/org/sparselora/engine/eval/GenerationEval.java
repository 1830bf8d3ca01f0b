package org.sparselora.engine.eval;

import java.util.ArrayList;
import java.util.List;
import org.sparselora.engine.data.Example;
import org.sparselora.engine.generate.BatchGenerator;
import org.sparselora.engine.generate.Generator;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.tokenizer.Tokenizer;

/**
 * Evaluation by generation: for each record, greedy generation from its prompt (the prompt encoded
 * as training encodes it, BOS included) up to EOS or {@code maxNewTokens}, the answer extracted by
 * the {@link EvalTask}, and a match against the record's expected answer. Records without an
 * expected answer, or whose prompt does not leave room for one generated token, are reported as
 * skipped and excluded from the accuracy — never counted as wrong or right. Records are generated
 * {@code batchSize} at a time ({@link BatchGenerator}: each answer is what the record gets alone).
 */
public final class GenerationEval {

    /** Records generated together by default: enough to fill a device step, few enough to pad little. */
    public static final int DEFAULT_BATCH_SIZE = 8;

    /** One record's outcome; {@code skipped} non-null means it was not evaluated, and why. */
    public record Record(int line, String generated, String extracted, String expected, boolean correct, String skipped) {}

    /** accuracy = correct / evaluated (NaN when nothing was evaluated). */
    public record Summary(int records, int evaluated, int correct, int skipped, double accuracy, List<Record> details) {}

    private final LlamaModel model;
    private final LoraAdapter lora;
    private final Tokenizer tok;
    private final EvalTask task;
    private final int maxNewTokens;
    private final int batchSize;

    public GenerationEval(LlamaModel model, LoraAdapter lora, Tokenizer tok, EvalTask task, int maxNewTokens) {
        this(model, lora, tok, task, maxNewTokens, DEFAULT_BATCH_SIZE);
    }

    /** @param batchSize records generated together (1 = one at a time) */
    public GenerationEval(LlamaModel model, LoraAdapter lora, Tokenizer tok, EvalTask task, int maxNewTokens, int batchSize) {
        if (maxNewTokens < 1) throw new IllegalArgumentException("max new tokens must be at least 1, got " + maxNewTokens);
        if (batchSize < 1) throw new IllegalArgumentException("eval batch size must be at least 1, got " + batchSize);
        this.model = model;
        this.lora = lora;
        this.tok = tok;
        this.task = task;
        this.maxNewTokens = maxNewTokens;
        this.batchSize = batchSize;
    }

    /** The expected answer of a record for this task: its short answer when it has one, else its response. */
    String expected(Example e) {
        if (e.answer() != null && !e.answer().isBlank()) return e.answer();
        return task == EvalTask.GSM8K ? null : e.response();
    }

    public Record evaluate(Example e) { return evaluateBatch(List.of(e)).get(0); }

    /** A record ready to generate (prompt and budget), or already decided (skipped). */
    private record Pending(Example e, String want, int[] prompt, int budget, Record skipped) {}

    private Pending prepare(Example e) {
        String want = expected(e);
        if (want == null || want.isBlank()) return new Pending(e, null, null, 0, new Record(e.line(), null, null, null, false, "no expected answer"));
        int[] prompt = tok.encode(e.prompt(), true);
        int room = model.config().maxPositions() - prompt.length;
        if (prompt.length == 0) return new Pending(e, want, null, 0, new Record(e.line(), null, null, want, false, "empty prompt"));
        if (room < 1) return new Pending(e, want, null, 0, new Record(e.line(), null, null, want, false,
                "prompt of " + prompt.length + " tokens fills the model's " + model.config().maxPositions() + " positions"));
        return new Pending(e, want, prompt, Math.min(maxNewTokens, room), null);
    }

    /** The records of {@code examples}, in order, their generations run as one batch. */
    private List<Record> evaluateBatch(List<Example> examples) {
        List<Pending> pending = examples.stream().map(this::prepare).toList();
        List<Pending> run = pending.stream().filter(p -> p.skipped() == null).toList();
        int[] budgets = run.stream().mapToInt(Pending::budget).toArray();
        List<BatchGenerator.Result> gen = new BatchGenerator(model, lora).generate(run.stream().map(Pending::prompt).toList(),
                Generator.Options.greedy(maxNewTokens, tok.eosId()), budgets);
        List<Record> out = new ArrayList<>(examples.size());
        for (int i = 0, j = 0; i < pending.size(); i++) {
            Pending p = pending.get(i);
            out.add(p.skipped() != null ? p.skipped() : judge(p, gen.get(j++).ids()));
        }
        return out;
    }

    private Record judge(Pending p, int[] ids) {
        String text = tok.decode(ids);
        String got = task.extract(text);
        boolean ok;
        try {
            ok = task.matches(got, p.want());
        } catch (IllegalArgumentException ex) {
            throw new IllegalArgumentException("record at line " + p.e().line() + ": " + ex.getMessage());
        }
        return new Record(p.e().line(), text, got, p.want(), ok, null);
    }

    public Summary evaluateAll(List<Example> examples, java.util.function.Consumer<Record> onRecord) {
        List<Record> out = new ArrayList<>(examples.size());
        int evaluated = 0, correct = 0, skipped = 0;
        for (int s = 0; s < examples.size(); s += batchSize) {
            for (Record r : evaluateBatch(examples.subList(s, Math.min(examples.size(), s + batchSize)))) {
                out.add(r);
                onRecord.accept(r);
                if (r.skipped() != null) skipped++;
                else {
                    evaluated++;
                    if (r.correct()) correct++;
                }
            }
        }
        return new Summary(examples.size(), evaluated, correct, skipped, evaluated == 0 ? Double.NaN : (double) correct / evaluated, out);
    }
}
