package org.sparselora.engine.data;

/**
 * One training record rendered to text: the prompt (no loss) and the response (loss). {@code answer}
 * is the short final answer for evaluation when the format has one (else null); {@code line} is the
 * record's 1-based line in its file, for messages.
 */
public record Example(String prompt, String response, String answer, int line) {}
