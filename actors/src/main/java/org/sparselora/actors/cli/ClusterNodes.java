package org.sparselora.actors.cli;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import com.typesafe.config.ConfigValueFactory;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletionStage;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.javadsl.AskPattern;
import org.sparselora.actors.pipeline.StepperPlacement;
import org.sparselora.actors.pipeline.WorkerHost;

/**
 * What {@code node} and {@code launch} share: the multi-node launch configuration with a node's
 * role, address and seed nodes applied (the command line wins over the {@code SPARSELORA_*}
 * variables the HOCON reads), waiting for worker nodes, and describing the cluster.
 */
final class ClusterNodes {

    private ClusterNodes() {}

    /**
     * {@code sparselora-multinode.conf} (or {@code -Dsparselora.launch=kubernetes}) with these
     * overrides; null leaves the HOCON's value (and its environment variable).
     */
    static Config config(String role, String host, Integer port, List<String> seeds, Duration stableAfter) {
        String launch = System.getProperty("sparselora.launch", "multinode");
        if (!launch.matches("multinode|kubernetes"))
            throw new IllegalArgumentException("-Dsparselora.launch=" + launch + ": a cluster node runs multinode or kubernetes");
        Config base = ConfigFactory.load("sparselora-" + launch);
        java.util.Map<String, Object> o = new java.util.HashMap<>();
        if (role != null) {
            if (!role.matches("coordinator|worker")) throw new IllegalArgumentException("--role " + role + ": expected coordinator or worker");
            o.put("pekko.cluster.roles", List.of(role));
            o.put("sparselora.node.role", role);
        }
        if (host != null) o.put("pekko.remote.artery.canonical.hostname", host);
        if (port != null) {
            if (port < 0 || port > 65535) throw new IllegalArgumentException("--port " + port + ": expected 0 (any free port) to 65535");
            o.put("pekko.remote.artery.canonical.port", port);
        }
        if (seeds != null && !seeds.isEmpty()) {
            List<String> s = new ArrayList<>();
            for (String hp : seeds) {
                if (!hp.matches("[^:/@\\s]+:\\d{1,5}")) throw new IllegalArgumentException("--seed " + hp + ": expected host:port");
                s.add("pekko://sparselora@" + hp);
            }
            o.put("pekko.cluster.seed-nodes", s);
        }
        if (stableAfter != null) o.put("pekko.cluster.split-brain-resolver.stable-after", stableAfter.toMillis() + "ms");
        return ConfigFactory.parseMap(o).withFallback(base).resolve();
    }

    /** A free TCP port on the loopback interface (for a coordinator that others must be told about). */
    static int freeLoopbackPort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    /** Blocks until {@code n} worker nodes offer their hosts, or fails after {@code timeout} naming how many came. */
    static List<org.apache.pekko.actor.typed.ActorRef<WorkerHost.Command>> awaitWorkers(StepperPlacement.Cluster cluster, int n, Duration timeout)
            throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            var hosts = cluster.hosts();
            if (hosts.size() >= n) return hosts;
            if (System.nanoTime() > deadline)
                throw new IllegalStateException(hosts.size() + " of " + n + " worker nodes joined the cluster within " + timeout);
            Thread.sleep(100);
        }
    }

    /** Every worker node's description (address, pid, devices), asked over the cluster. */
    static List<WorkerHost.NodeInfo> describe(ActorSystem<?> system, List<org.apache.pekko.actor.typed.ActorRef<WorkerHost.Command>> hosts) {
        List<WorkerHost.NodeInfo> out = new ArrayList<>();
        for (var h : hosts) {
            CompletionStage<WorkerHost.NodeInfo> r = AskPattern.ask(h, WorkerHost.DescribeNode::new, Duration.ofSeconds(20), system.scheduler());
            out.add(r.toCompletableFuture().join());
        }
        return out;
    }

    /** {@code cluster.json}: one object per node (address, role, pid, devices), the coordinator first. */
    static String clusterJson(List<WorkerHost.NodeInfo> nodes) {
        StringBuilder b = new StringBuilder("{\n  \"nodes\": [\n");
        for (int i = 0; i < nodes.size(); i++) {
            WorkerHost.NodeInfo n = nodes.get(i);
            b.append("    {\"address\": ").append(quote(n.address())).append(", \"role\": ").append(quote(n.role()))
                    .append(", \"pid\": ").append(n.pid()).append(", \"devices\": [");
            for (int d = 0; d < n.devices().size(); d++) b.append(d > 0 ? ", " : "").append(quote(n.devices().get(d)));
            b.append("]}").append(i + 1 < nodes.size() ? "," : "").append('\n');
        }
        return b.append("  ]\n}\n").toString();
    }

    private static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    static Map<String, String> env(String role, String host, int port, String seed) {
        return Map.of("SPARSELORA_ROLE", role, "SPARSELORA_HOST", host, "SPARSELORA_PORT", Integer.toString(port), "SPARSELORA_SEED_1", seed);
    }
}
