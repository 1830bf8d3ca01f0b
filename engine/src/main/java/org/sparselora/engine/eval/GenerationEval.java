package org.sparselora.engine.eval;

import java.util.ArrayList;
import java.util.List;
import org.sparselora.engine.data.Example;
import org.sparselora.engine.generate.Generator;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.tokenizer.Tokenizer;

/**
 * Evaluation by generation: for each record, greedy generation from its prompt (the prompt encoded
 * as training encodes it, BOS included) up to EOS or {@code maxNewTokens}, the answer extracted by
 * the {@link EvalTask}, and a match against the record's expected answer. Records without an
 * expected answer, or whose prompt does not leave room for one generated token, are reported as
 * skipped and excluded from the accuracy — never counted as wrong or right.
 */
public final class GenerationEval {

    /** One record's outcome; {@code skipped} non-null means it was not evaluated, and why. */
    public record Record(int line, String generated, String extracted, String expected, boolean correct, String skipped) {}

    /** accuracy = correct / evaluated (NaN when nothing was evaluated). */
    public record Summary(int records, int evaluated, int correct, int skipped, double accuracy, List<Record> details) {}

    private final LlamaModel model;
    private final LoraAdapter lora;
    private final Tokenizer tok;
    private final EvalTask task;
    private final int maxNewTokens;

    public GenerationEval(LlamaModel model, LoraAdapter lora, Tokenizer tok, EvalTask task, int maxNewTokens) {
        if (maxNewTokens < 1) throw new IllegalArgumentException("max new tokens must be at least 1, got " + maxNewTokens);
        this.model = model;
        this.lora = lora;
        this.tok = tok;
        this.task = task;
        this.maxNewTokens = maxNewTokens;
    }

    /** The expected answer of a record for this task: its short answer when it has one, else its response. */
    String expected(Example e) {
        if (e.answer() != null && !e.answer().isBlank()) return e.answer();
        return task == EvalTask.GSM8K ? null : e.response();
    }

    public Record evaluate(Example e) {
        String want = expected(e);
        if (want == null || want.isBlank()) return new Record(e.line(), null, null, null, false, "no expected answer");
        int[] prompt = tok.encode(e.prompt(), true);
        int room = model.config().maxPositions() - prompt.length;
        if (prompt.length == 0) return new Record(e.line(), null, null, want, false, "empty prompt");
        if (room < 1) return new Record(e.line(), null, null, want, false, "prompt of " + prompt.length + " tokens fills the model's " + model.config().maxPositions() + " positions");
        int[] ids = new Generator(model, lora).generate(prompt, Generator.Options.greedy(Math.min(maxNewTokens, room), tok.eosId()));
        String text = tok.decode(ids);
        String got = task.extract(text);
        boolean ok;
        try {
            ok = task.matches(got, want);
        } catch (IllegalArgumentException ex) {
            throw new IllegalArgumentException("record at line " + e.line() + ": " + ex.getMessage());
        }
        return new Record(e.line(), text, got, want, ok, null);
    }

    public Summary evaluateAll(List<Example> examples, java.util.function.Consumer<Record> onRecord) {
        List<Record> out = new ArrayList<>(examples.size());
        int evaluated = 0, correct = 0, skipped = 0;
        for (Example e : examples) {
            Record r = evaluate(e);
            out.add(r);
            onRecord.accept(r);
            if (r.skipped() != null) skipped++;
            else {
                evaluated++;
                if (r.correct()) correct++;
            }
        }
        return new Summary(examples.size(), evaluated, correct, skipped, evaluated == 0 ? Double.NaN : (double) correct / evaluated, out);
    }
}
