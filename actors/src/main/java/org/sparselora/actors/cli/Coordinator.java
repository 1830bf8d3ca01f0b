package org.sparselora.actors.cli;

import com.typesafe.config.Config;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.sparselora.actors.job.JobFiles;
import org.sparselora.actors.pipeline.StepperPlacement;
import org.sparselora.actors.pipeline.WorkerHost;
import org.sparselora.engine.io.AtomicFiles;

/**
 * The coordinator of a cluster run ({@code node --role coordinator}, {@code launch}): joins the
 * cluster, waits for the worker nodes, runs the job with its Steppers placed on them (the same
 * JobManager and supervisor as {@code train}), and writes {@code output_dir/cluster.json}.
 */
final class Coordinator {

    private Coordinator() {}

    static int run(TrainCommand train, Config conf, int nodes, Duration wait) throws Exception {
        return run(train, conf, nodes, wait, () -> {});
    }

    /**
     * @param startWorkers starts the worker nodes once this node's actor system is up (a node that
     *                     tries to join a coordinator still starting may give up on it)
     */
    static int run(TrainCommand train, Config conf, int nodes, Duration wait, Runnable startWorkers) throws Exception {
        List<WorkerHost.NodeInfo> described = new ArrayList<>();
        int rc = train.run(conf, system -> {
            StepperPlacement.Cluster cluster = StepperPlacement.Cluster.start(system);
            startWorkers.run();
            try {
                var hosts = ClusterNodes.awaitWorkers(cluster, nodes, wait);
                described.add(new WorkerHost.NodeInfo(system.address().toString(), "coordinator", ProcessHandle.current().pid(), List.of()));
                described.addAll(ClusterNodes.describe(system, hosts));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while waiting for worker nodes");
            }
            return Launch.settings(conf).withPlacement(cluster);
        });
        if (!described.isEmpty()) {
            Path out = Path.of(JobFiles.load(train.config).getOutputDir());
            if (java.nio.file.Files.isDirectory(out)) AtomicFiles.writeString(out.resolve("cluster.json"), ClusterNodes.clusterJson(described));
        }
        return rc;
    }
}
