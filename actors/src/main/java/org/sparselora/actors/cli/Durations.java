package org.sparselora.actors.cli;

import java.time.Duration;
import picocli.CommandLine;

/** Durations on the command line as people write them: 500ms, 20s, 5m, 1h (or ISO-8601, PT20S). */
final class Durations implements CommandLine.ITypeConverter<Duration> {
    @Override
    public Duration convert(String s) {
        var m = java.util.regex.Pattern.compile("(\\d+)(ms|s|m|h)").matcher(s.strip());
        if (m.matches()) {
            long n = Long.parseLong(m.group(1));
            return switch (m.group(2)) {
                case "ms" -> Duration.ofMillis(n);
                case "s" -> Duration.ofSeconds(n);
                case "m" -> Duration.ofMinutes(n);
                default -> Duration.ofHours(n);
            };
        }
        try {
            return Duration.parse(s);
        } catch (RuntimeException e) {
            throw new CommandLine.TypeConversionException("'" + s + "': expected a duration such as 500ms, 20s, 5m or 1h");
        }
    }
}
