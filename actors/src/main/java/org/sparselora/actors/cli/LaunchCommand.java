package org.sparselora.actors.cli;

import com.typesafe.config.Config;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import org.sparselora.actors.job.Devices;
import org.sparselora.actors.job.JobFiles;
import org.sparselora.proto.control.JobSpec;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * {@code sparselora launch --local N train --config job.yaml [train options]}: a coordinator (this
 * process) and N worker JVMs on loopback, one Stepper slot each, run the job; the workers stop
 * with this process. {@code --hosts FILE} starts the workers over SSH instead (one line per node:
 * {@code HOST [DEVICES]}, e.g. {@code gpu-1 cuda:0,cuda:1}), with this machine as the coordinator at
 * {@code --bind}; {@code --dry-run} prints those commands without running anything.
 */
@Command(name = "launch", mixinStandardHelpOptions = true,
        description = {"Run a training job on a cluster: a coordinator (this process) and worker nodes it starts.",
                "--local N: N worker JVMs on this machine (loopback); --hosts FILE: workers over SSH.",
                "Writes <output_dir>/cluster.json (each node: address, role, pid, devices)."})
public final class LaunchCommand implements Callable<Integer> {

    @Option(names = "--local", paramLabel = "N", description = "start N worker JVMs on this machine")
    Integer local;

    @Option(names = "--hosts", paramLabel = "FILE", description = "start one worker per line of FILE over ssh: HOST [DEVICES]")
    Path hosts;

    @Option(names = "--bind", description = "with --hosts: this machine's address as the workers reach it (required with --hosts)")
    String bind;

    @Option(names = "--remote-dir", description = "with --hosts: the project directory on the worker hosts (default: this one's path)")
    String remoteDir;

    @Option(names = "--dry-run", description = "with --hosts: print the ssh commands, start nothing")
    boolean dryRun;

    @Option(names = "--devices", split = ",", description = "with --local: the device of worker node i is entry i (default: from the job's device)")
    List<String> devices;

    @Option(names = "--wait", converter = Durations.class, description = "how long to wait for the worker nodes to join (default 2m)")
    Duration wait = Duration.ofMinutes(2);

    @Option(names = "--stable-after", converter = Durations.class, description = "split-brain resolver: membership stable this long before an unreachable node is downed (default 5s with --local, 20s otherwise)")
    Duration stableAfter;

    @Parameters(index = "0", paramLabel = "train", description = "the command to run on the cluster: train")
    String command;

    @Parameters(index = "1..*", paramLabel = "ARGS", description = "its options (see train --help)")
    List<String> args = new ArrayList<>();

    @Override
    public Integer call() throws Exception {
        if (!"train".equals(command)) throw new IllegalArgumentException("'" + command + "': launch runs train (launch --local N train --config job.yaml)");
        if ((local == null) == (hosts == null)) throw new IllegalArgumentException("give exactly one of --local N and --hosts FILE");
        TrainCommand train = new TrainCommand();
        new CommandLine(train).parseArgs(args.toArray(String[]::new));
        if (train.stopAfter != null || train.randomInit != null)
            throw new IllegalArgumentException("launch: --stop-after and --random-init are for train in one process");
        JobSpec spec = JobFiles.load(train.config);
        if (hosts != null) return viaSsh(train, spec);
        if (local < 1 || local > 64) throw new IllegalArgumentException("--local " + local + ": expected 1 to 64 worker JVMs");
        List<String> dev = devices != null ? devices : defaultDevices(spec, local);
        if (dev.size() != local) throw new IllegalArgumentException("--devices lists " + dev.size() + " devices for " + local + " worker nodes");
        int port = ClusterNodes.freeLoopbackPort();
        Duration stable = stableAfter != null ? stableAfter : Duration.ofSeconds(5);
        Config conf = ClusterNodes.config("coordinator", "127.0.0.1", port, List.of("127.0.0.1:" + port), stable);
        List<Process> workers = new ArrayList<>();
        try {
            return Coordinator.run(train, conf, local, wait, () -> {
                try {
                    for (int i = 0; i < local; i++)
                        workers.add(new ProcessBuilder(localWorker(port, dev.get(i), stable)).inheritIO().start());
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException("cannot start a worker JVM: " + e.getMessage(), e);
                }
                System.err.println("sparselora launch: coordinator pekko://sparselora@127.0.0.1:" + port + ", " + local + " worker JVMs (pids "
                        + workers.stream().map(p -> Long.toString(p.pid())).collect(java.util.stream.Collectors.joining(", ")) + ")");
            });
        } finally {
            for (Process p : workers) p.destroy();
            for (Process p : workers)
                if (!p.waitFor(15, java.util.concurrent.TimeUnit.SECONDS)) p.destroyForcibly();
        }
    }

    /** The device of each local worker node: the job's (cuda:<n> → worker i on GPU n + i; cuda:a,b,… → entry i). */
    static List<String> defaultDevices(JobSpec spec, int nodes) {
        Devices.Device d = Devices.forJob(spec.getDevice(), Math.max(nodes, spec.getWorkers()));
        List<String> out = new ArrayList<>();
        for (int i = 0; i < nodes; i++) out.add(d.gpu() ? "cuda:" + d.gpuOf(i, Math.max(nodes, spec.getWorkers())) : "cpu");
        return out;
    }

    /** The java command line of one local worker node: this JVM's java, class path and module flags. */
    static List<String> localWorker(int coordinatorPort, String device, Duration stable) {
        String java = ProcessHandle.current().info().command().orElse(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        List<String> cmd = new ArrayList<>(List.of(java));
        for (String a : ManagementFactory.getRuntimeMXBean().getInputArguments())
            if (a.startsWith("--add-modules") || a.startsWith("--enable-native-access") || a.startsWith("--sun-misc-unsafe")
                    || a.startsWith("-Xmx") || a.startsWith("-Dsparselora.") || a.startsWith("-Djava.io.tmpdir")) cmd.add(a);
        cmd.addAll(List.of("-Dsparselora.launch=multinode", "-cp", System.getProperty("java.class.path"), Main.class.getName(),
                "node", "--role", "worker", "--host", "127.0.0.1", "--port", "0", "--seed", "127.0.0.1:" + coordinatorPort,
                "--devices", device, "--stable-after", stable.toMillis() + "ms", "--parent-pid", Long.toString(ProcessHandle.current().pid())));
        return cmd;
    }

    private int viaSsh(TrainCommand train, JobSpec spec) throws Exception {
        if (bind == null) throw new IllegalArgumentException("--hosts needs --bind: this machine's address as the worker hosts reach it");
        List<SshHosts.Host> nodes = SshHosts.read(hosts);
        int port = 25520;
        String dir = remoteDir != null ? remoteDir : Path.of("").toAbsolutePath().toString();
        Duration stable = stableAfter != null ? stableAfter : Duration.ofSeconds(20);
        List<List<String>> cmds = new ArrayList<>();
        for (SshHosts.Host h : nodes) cmds.add(SshHosts.command(h, dir, bind + ":" + port, stable));
        if (dryRun) {
            for (List<String> c : cmds) System.out.println(SshHosts.shellJoin(c));
            return 0;
        }
        Config conf = ClusterNodes.config("coordinator", bind, port, List.of(bind + ":" + port), stable);
        List<Process> workers = new ArrayList<>();
        try {
            return Coordinator.run(train, conf, nodes.size(), wait, () -> {
                try {
                    for (List<String> c : cmds) workers.add(new ProcessBuilder(c).inheritIO().start());
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException("cannot run ssh: " + e.getMessage(), e);
                }
            });
        } finally {
            // ssh -tt: ending the ssh session hangs up the remote node
            for (Process p : workers) p.destroy();
        }
    }

    static void checkReadable(Path p) throws IOException {
        if (!Files.isRegularFile(p)) throw new IOException(p + ": no such file");
    }
}
