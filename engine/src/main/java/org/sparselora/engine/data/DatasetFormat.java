package org.sparselora.engine.data;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.Locale;

/**
 * The record layouts the readers understand: Alpaca / Math10K / Commonsense-170K
 * ({@code instruction}, {@code input}, {@code output}, optional {@code answer}), GSM8K
 * ({@code question}, {@code answer} ending in a {@code #### N} line), plain text (one string
 * field, {@code text} unless configured) and raw prompt/completion pairs ({@code prompt},
 * {@code completion}, optional {@code answer}): the prompt is used verbatim, with no template
 * around it, for tasks whose prompts are their own format (the demo's {@code "abcdef>"}).
 */
public enum DatasetFormat {
    ALPACA, GSM8K, TEXT, PROMPT_COMPLETION;

    public static DatasetFormat parse(String name) {
        return switch (name.toLowerCase(Locale.ROOT)) {
            case "alpaca", "math10k", "math_10k", "commonsense", "llm-adapters" -> ALPACA;
            case "gsm8k" -> GSM8K;
            case "text", "plain" -> TEXT;
            case "prompt_completion", "prompt-completion", "completion" -> PROMPT_COMPLETION;
            default -> throw new IllegalArgumentException("unknown dataset format '" + name + "' (alpaca, gsm8k, text, prompt_completion)");
        };
    }

    /** Guesses the format from one record, or null if it fits none. */
    static DatasetFormat detect(JsonNode record, String textField) {
        if (record == null || !record.isObject()) return null;
        if (record.has("instruction") && record.has("output")) return ALPACA;
        if (record.has("question") && record.has("answer")) return GSM8K;
        if (record.has("prompt") && record.has("completion")) return PROMPT_COMPLETION;
        if (record.has(textField)) return TEXT;
        return null;
    }
}
