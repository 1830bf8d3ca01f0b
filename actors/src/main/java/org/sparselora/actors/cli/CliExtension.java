package org.sparselora.actors.cli;

/**
 * A subcommand contributed by another module (found with {@link java.util.ServiceLoader}, a
 * {@code META-INF/services/org.sparselora.actors.cli.CliExtension} entry), so modules that depend
 * on this one — arc-agi — can add commands to {@code sparselora}.
 */
public interface CliExtension {
    String name();

    /** A picocli {@code @Command} object. */
    Object command();
}
