package org.sparselora.actors.cli;

import com.typesafe.config.Config;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import org.apache.pekko.actor.typed.ActorSystem;
import org.sparselora.actors.pipeline.WorkerHost;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code sparselora node --role worker|coordinator}: one node of a training cluster, configured
 * from {@code cluster-config/sparselora-multinode.conf} (or {@code -Dsparselora.launch=kubernetes})
 * and the {@code SPARSELORA_*} variables it reads; the options here override both. A worker
 * offers one Stepper slot per {@code --devices} entry and runs until the cluster downs it or it is
 * stopped; a coordinator waits for {@code --nodes} workers and runs the job of {@code --config}
 * on them (as {@code train} does in one process), then writes {@code output_dir/cluster.json}.
 */
@Command(name = "node", mixinStandardHelpOptions = true,
        description = {"Run one node of a training cluster (Pekko Cluster over Artery).",
                "Workers host the Steppers; the coordinator runs the job and places its workers on them.",
                "Cluster traffic is unauthenticated unless Artery TLS is configured: use a private network or TLS."})
public final class NodeCommand implements Callable<Integer> {

    @Option(names = "--role", required = true, description = "coordinator or worker")
    String role;

    @Option(names = "--host", description = "this node's address as the others reach it (default: $SPARSELORA_HOST or 127.0.0.1)")
    String host;

    @Option(names = "--port", description = "Artery port, 0 = any free one (default: $SPARSELORA_PORT or 25520)")
    Integer port;

    @Option(names = "--seed", paramLabel = "HOST:PORT", description = "a seed node (repeatable; the coordinator first; default: $SPARSELORA_SEED_1/2)")
    List<String> seeds = new ArrayList<>();

    @Option(names = "--devices", split = ",", description = "worker: one Stepper slot per device: cpu, cuda, cuda:<n> (default: cpu)")
    List<String> devices = new ArrayList<>(List.of("cpu"));

    @Option(names = "--stable-after", converter = Durations.class, description = "split-brain resolver: how long membership must be stable before an unreachable node is downed (e.g. 20s)")
    Duration stableAfter;

    @Option(names = "--score-timeout", converter = Durations.class, description = "worker: how long a sparse step waits for the other workers' channel scores (default 10m)")
    Duration scoreTimeout = Duration.ofMinutes(10);

    @Option(names = "--parent-pid", hidden = true, description = "stop when this process ends (set by launch --local)")
    Long parentPid;

    @Option(names = {"-c", "--config"}, paramLabel = "JOB.yaml", description = "coordinator: the job file")
    Path config;

    @Option(names = "--nodes", description = "coordinator: worker nodes to wait for before the job starts (default 1)")
    int nodes = 1;

    @Option(names = "--wait", converter = Durations.class, description = "coordinator: how long to wait for them (default 5m)")
    Duration wait = Duration.ofMinutes(5);

    @Option(names = "--resume", description = "coordinator: continue from the checkpoint in output_dir")
    boolean resume;

    @Option(names = "--overwrite", description = "coordinator: start over in an output_dir that holds an earlier run")
    boolean overwrite;

    @Override
    public Integer call() throws Exception {
        Config conf = ClusterNodes.config(role, host, port, seeds, stableAfter);
        if (role.equals("coordinator")) {
            if (config == null) throw new IllegalArgumentException("--config: a coordinator node needs the job file");
            if (nodes < 1) throw new IllegalArgumentException("--nodes must be at least 1, got " + nodes);
            TrainCommand train = new TrainCommand();
            train.config = config;
            train.resume = resume;
            train.overwrite = overwrite;
            return Coordinator.run(train, conf, nodes, wait);
        }
        if (config != null) throw new IllegalArgumentException("--config: a worker node takes its jobs from the coordinator");
        return runWorker(conf, new WorkerHost.Settings(devices, scoreTimeout), parentPid);
    }

    /** A worker node: its WorkerHost until the actor system ends (downed, left, or this process is stopped). */
    static int runWorker(Config conf, WorkerHost.Settings settings, Long parentPid) {
        ActorSystem<WorkerHost.Command> system = ActorSystem.create(WorkerHost.create(settings), "sparselora", conf);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            system.terminate();
            try {
                system.getWhenTerminated().toCompletableFuture().get(10, java.util.concurrent.TimeUnit.SECONDS);
            } catch (Exception ignored) {
            }
        }));
        if (parentPid != null)   // launched as a child: never outlive the launcher
            ProcessHandle.of(parentPid).ifPresentOrElse(p -> p.onExit().thenRun(system::terminate), system::terminate);
        System.err.println("sparselora node: worker " + system.address() + " (pid " + ProcessHandle.current().pid() + ", devices "
                + String.join(",", settings.devices()) + ")");
        system.getWhenTerminated().toCompletableFuture().join();
        return 0;
    }
}
