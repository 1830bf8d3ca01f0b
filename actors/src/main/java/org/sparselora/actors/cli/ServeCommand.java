package org.sparselora.actors.cli;

import com.typesafe.config.Config;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.SpawnProtocol;
import org.sparselora.actors.server.ControlServer;
import org.sparselora.actors.server.JobManager;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code sparselora serve}: the SparseLoraControl gRPC server. */
@Command(name = "serve", mixinStandardHelpOptions = true,
        description = {"Run the control server (gRPC, see proto/src/main/proto/control.proto).",
                "Loopback only unless --bind names another address, which requires --token-file."})
public final class ServeCommand implements Callable<Integer> {

    @Option(names = "--bind", defaultValue = "127.0.0.1", description = "address to listen on (default: ${DEFAULT-VALUE})")
    String bind;

    @Option(names = "--port", defaultValue = "7070", description = "port (default: ${DEFAULT-VALUE}; 0 = any free port)")
    int port;

    @Option(names = "--token-file", paramLabel = "FILE", description = "require 'authorization: Bearer <contents of FILE>' on every call")
    Path tokenFile;

    @Option(names = "--tls-cert", paramLabel = "PEM", description = "TLS certificate chain (with --tls-key)")
    Path tlsCert;

    @Option(names = "--tls-key", paramLabel = "PEM", description = "TLS private key, PKCS#8 (with --tls-cert)")
    Path tlsKey;

    @Option(names = "--max-concurrent-jobs", defaultValue = "1", description = "jobs run at once; more are queued (default: ${DEFAULT-VALUE})")
    int maxConcurrent;

    @Option(names = "--max-message-bytes", defaultValue = "4194304", description = "largest request accepted (default: ${DEFAULT-VALUE})")
    int maxMessageBytes;

    @Option(names = "--metrics-port", paramLabel = "PORT", description = "serve Prometheus metrics at http://BIND:PORT/metrics (off by default)")
    Integer metricsPort;

    @Override
    public Integer call() throws Exception {
        Config conf = Launch.config();
        ActorSystem<SpawnProtocol.Command> system = Launch.actorSystem(conf);
        JobManager jobs = new JobManager(system, maxConcurrent, JobManager.engines(), Launch.settings(conf));
        ControlServer server;
        try {
            server = ControlServer.start(new ControlServer.Options(bind, port, tokenFile, tlsCert, tlsKey, maxMessageBytes, metricsPort), jobs);
        } catch (RuntimeException | java.io.IOException e) {
            system.terminate();
            throw e;
        }
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                jobs.close(); // running jobs stop after their current step, with a checkpoint
                server.close();
            } catch (InterruptedException ignored) {
            }
            system.terminate();
        }));
        System.out.println("sparselora serve: listening on " + bind + ":" + server.port()
                + (tokenFile != null ? " (bearer token required)" : "") + (tlsCert != null ? " (TLS)" : "")
                + (server.metricsPort() != null ? "; metrics on :" + server.metricsPort() + "/metrics" : ""));
        System.out.flush();
        server.awaitTermination();
        return 0;
    }
}
