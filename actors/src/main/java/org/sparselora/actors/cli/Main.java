package org.sparselora.actors.cli;

import io.grpc.StatusRuntimeException;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/**
 * The {@code sparselora} command line. Each subcommand is its own class; to add one (score,
 * generate, demo, predictor, calibrate, …) write a {@code Callable<Integer>} annotated with
 * {@code @Command} and list it in {@code subcommands} below (or, from a module that depends on this
 * one, register a {@link CliExtension}). Errors a user can cause print one
 * line ({@code sparselora: …}) and exit 2; a failed job exits 1.
 */
@Command(name = "sparselora", mixinStandardHelpOptions = true, version = "sparselora 0.1.0",
        description = "SparseLoRA fine-tuning on the JVM: train in-process, or run a server and drive it.",
        subcommands = {TrainCommand.class, DemoCommand.class, ServeCommand.class, SubmitCommand.class, WatchCommand.class, CancelCommand.class,
                JobsCommand.class, ScoreCommand.class, EvalCommand.class, GenerateCommand.class, MergeCommand.class, PredictorCommand.class, CalibrateCommand.class,
                SparsityCommand.class, NodeCommand.class, LaunchCommand.class,
                CommandLine.HelpCommand.class})
public final class Main implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "a command is required (see --help)");
    }

    public static void main(String[] args) {
        System.exit(run(args));
    }

    /** Runs a command line and returns its exit code (no System.exit: tests call this). */
    public static int run(String... args) {
        return commandLine().execute(args);
    }

    public static CommandLine commandLine() {
        CommandLine cl = new CommandLine(new Main());
        for (CliExtension ext : java.util.ServiceLoader.load(CliExtension.class))
            if (!cl.getSubcommands().containsKey(ext.name())) cl.addSubcommand(ext.name(), ext.command());
        // launch's own options come before the command it runs; everything after it is that command's
        cl.getSubcommands().get("launch").setStopAtPositional(true);
        cl.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            cmd.getErr().println(cmd.getCommandSpec().qualifiedName() + ": " + describe(ex));  // e.g. "sparselora predictor build: …"
            if (System.getenv("SPARSELORA_DEBUG") != null) ex.printStackTrace(cmd.getErr());
            return 2;
        });
        return cl;
    }

    static String describe(Throwable ex) {
        if (ex instanceof StatusRuntimeException s)
            return s.getStatus().getCode() + (s.getStatus().getDescription() != null ? ": " + s.getStatus().getDescription() : "");
        return ex.getMessage() != null ? ex.getMessage() : ex.toString();
    }
}
