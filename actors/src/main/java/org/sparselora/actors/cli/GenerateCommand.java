package org.sparselora.actors.cli;

import java.io.PrintStream;
import java.util.Arrays;
import java.util.concurrent.Callable;
import org.sparselora.engine.generate.Generator;
import org.sparselora.engine.tokenizer.Tokenizer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code sparselora generate}: continues a prompt with the base model (plus an optional PEFT
 * adapter), greedy at temperature 0 or temperature/top-p sampling with a seed, stopping at EOS.
 * The prompt is encoded with the tokenizer's special tokens (BOS where it uses one); an empty prompt
 * starts from BOS alone, as llama2.c does. The continuation is printed as it is produced: each step
 * decodes the whole sequence and prints the new suffix, so byte-fallback tokens and the
 * tokenizer's leading-space rules come out as the full decode would.
 */
@Command(name = "generate", mixinStandardHelpOptions = true,
        description = {"Generate a continuation of a prompt and print it (greedy at --temperature 0)."})
public final class GenerateCommand implements Callable<Integer> {

    @Mixin
    ModelOptions models;

    @Mixin
    AdapterOption adapter;

    @Option(names = "--prompt", required = true, paramLabel = "S", description = "the prompt (may be empty: start from BOS)")
    String prompt;

    @Option(names = "--max-new-tokens", required = true, paramLabel = "N", description = "most tokens to generate (fewer at EOS)")
    int maxNewTokens;

    @Option(names = "--temperature", defaultValue = "0", description = "0 = greedy (default: ${DEFAULT-VALUE})")
    float temperature;

    @Option(names = "--top-p", defaultValue = "1", description = "nucleus mass in (0,1] (default: ${DEFAULT-VALUE})")
    float topP;

    @Option(names = "--seed", defaultValue = "0", description = "sampling seed (default: ${DEFAULT-VALUE})")
    long seed;

    @Mixin
    DeviceOption device;

    @Override
    public Integer call() {
        new Generator.Options(maxNewTokens, temperature, topP, seed, -1); // validates the numbers first
        try (ModelOptions.Opened m = models.open()) {
            int[] ids = promptIds(m.tok(), prompt);
            Generator.Options withEos = new Generator.Options(maxNewTokens, temperature, topP, seed, m.tok().eosId());
            m.run(device, adapter, (model, lora) -> {
                PrintStream out = System.out;
                Streamer s = new Streamer(m.tok(), ids, out);
                new Generator(model, lora).generate(ids, withEos, s::accept);
                s.finish();
                out.println();
                out.flush();
                return null;
            });
        }
        return 0;
    }

    /** The prompt's ids with the tokenizer's special tokens; an empty encoding becomes BOS alone. */
    static int[] promptIds(Tokenizer tok, String prompt) {
        int[] ids = tok.encode(prompt, true);
        if (ids.length > 0) return ids;
        if (tok.bosId() < 0) throw new IllegalArgumentException("--prompt is empty and the tokenizer has no BOS token to start from");
        return new int[] {tok.bosId()};
    }

    /** Prints the new suffix of decode(prompt ⊕ generated) after each token. */
    static final class Streamer {
        private final Tokenizer tok;
        private final PrintStream out;
        private int[] seq;
        private int len;
        private final String promptText;
        private final int promptLen;
        private String printed = "";

        Streamer(Tokenizer tok, int[] prompt, PrintStream out) {
            this.tok = tok;
            this.out = out;
            this.seq = Arrays.copyOf(prompt, prompt.length + 64);
            this.len = prompt.length;
            this.promptLen = prompt.length;
            this.promptText = tok.decode(prompt);
        }

        void accept(int id) {
            if (len == seq.length) seq = Arrays.copyOf(seq, seq.length * 2);
            seq[len++] = id;
            String cont = continuation();
            // a partial UTF-8 sequence decodes to U+FFFD until its last byte arrives: hold it back
            int end = cont.length();
            while (end > printed.length() && cont.charAt(end - 1) == '\uFFFD') end--;
            emit(cont, end);
        }

        /** Prints whatever is still held back (a lone U+FFFD at the very end is real output). */
        void finish() { emit(continuation(), continuation().length()); }

        private String continuation() {
            String all = tok.decode(Arrays.copyOf(seq, len));
            return all.startsWith(promptText) ? all.substring(promptText.length()) : tok.decode(Arrays.copyOfRange(seq, promptLen, len));
        }

        private void emit(String cont, int end) {
            if (end > printed.length() && cont.startsWith(printed)) {
                out.print(cont.substring(printed.length(), end));
                out.flush();
                printed = cont.substring(0, end);
            }
        }

        /** Everything printed so far (the generated text). */
        String text() { return printed; }
    }
}
