package org.sparselora.actors.pipeline;

import java.util.List;

/**
 * What a {@link BatchSource} found when it read its data set: usable records, and the malformed
 * ones (skipped, never a crash) with a line number and reason each, e.g. "line 17: missing 'output'".
 */
public record DataSummary(long records, long malformed, List<String> malformedLines) {
    public DataSummary {
        malformedLines = List.copyOf(malformedLines);
    }
}
