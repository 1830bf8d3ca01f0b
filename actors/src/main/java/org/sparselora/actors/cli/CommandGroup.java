package org.sparselora.actors.cli;

import picocli.CommandLine;

/**
 * A command that only groups subcommands ({@code predictor build}, {@code sparsity check}): run
 * alone, it is a usage error that names the subcommands.
 */
abstract class CommandGroup implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(),
                "a subcommand is required (" + String.join(", ", spec.subcommands().keySet()) + ")");
    }
}
