package org.sparselora.arcagi;

import picocli.CommandLine.Command;

/** {@code sparselora arc}: pretrain an ARC base model, then solve ARC tasks with test-time training. */
@Command(name = "arc", mixinStandardHelpOptions = true, subcommands = {SolveCommand.class, PretrainCommand.class},
        description = {"ARC-AGI: 'arc pretrain' trains a small base model on ARC training tasks; 'arc solve' answers tasks",
                "with per-task LoRA test-time training, augmented inference and voting."})
public final class ArcCommand implements Runnable {
    @picocli.CommandLine.Spec picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public void run() { spec.commandLine().usage(System.out); }
}
