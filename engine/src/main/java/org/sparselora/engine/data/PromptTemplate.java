package org.sparselora.engine.data;

/**
 * Prompt templates per format. {@link #LLM_ADAPTERS} is the Alpaca template exactly as
 * LLM-Adapters' {@code finetune.py} renders it for Math10K/Commonsense training, stray trailing
 * spaces and 16-space indentation included (it comes from an indented Python triple-quoted
 * string), so a model fine-tuned here sees the same text as the reference. {@link #ALPACA} is the
 * clean Stanford Alpaca form. The response follows the prompt directly.
 */
public enum PromptTemplate {
    LLM_ADAPTERS {
        @Override public String prompt(String instruction, String input) {
            String ind = " ".repeat(16);
            if (input != null && !input.isEmpty())
                return "Below is an instruction that describes a task, paired with an input that provides further context. "
                        + "Write a response that appropriately completes the request. \n\n"
                        + ind + "### Instruction:\n" + ind + instruction + "\n" + ind + "\n"
                        + ind + "### Input:\n" + ind + input + "\n" + ind + "\n"
                        + ind + "### Response:\n" + ind;
            return "Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n\n"
                    + ind + "### Instruction:\n" + ind + instruction + "\n" + ind + "\n"
                    + ind + "### Response:\n" + ind;
        }
    },
    ALPACA {
        @Override public String prompt(String instruction, String input) {
            if (input != null && !input.isEmpty())
                return "Below is an instruction that describes a task, paired with an input that provides further context. "
                        + "Write a response that appropriately completes the request.\n\n"
                        + "### Instruction:\n" + instruction + "\n\n### Input:\n" + input + "\n\n### Response:\n";
            return "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
                    + "### Instruction:\n" + instruction + "\n\n### Response:\n";
        }
    };

    /** The text before the response. */
    public abstract String prompt(String instruction, String input);

    public static PromptTemplate parse(String name) {
        return switch (name.toLowerCase(java.util.Locale.ROOT).replace('-', '_')) {
            case "llm_adapters" -> LLM_ADAPTERS;
            case "alpaca" -> ALPACA;
            default -> throw new IllegalArgumentException("unknown prompt template '" + name + "' (llm_adapters, alpaca)");
        };
    }
}
