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
                "Requires --token-file (clients and tokens) unless --insecure-local on loopback; job paths must lie inside --root directories."})
public final class ServeCommand implements Callable<Integer> {

    @Option(names = "--bind", defaultValue = "127.0.0.1", description = "address to listen on (default: ${DEFAULT-VALUE})")
    String bind;

    @Option(names = "--port", defaultValue = "7070", description = "port (default: ${DEFAULT-VALUE}; 0 = any free port)")
    int port;

    @Option(names = "--token-file", paramLabel = "FILE", description = {"clients and their tokens, one per line: NAME ROLE TOKEN (role user or admin;",
            "a file holding one bare token is one admin client). Every call must carry 'authorization: Bearer <token>'."})
    Path tokenFile;

    @Option(names = "--insecure-local", description = {"serve a loopback address without tokens: every local user becomes the same admin client",
            "and can make the server read and write files with its rights (inside the roots)"})
    boolean insecureLocal;

    @Option(names = "--root", paramLabel = "DIR", description = {"a directory whose files jobs may read and write (repeatable); every path of a submitted",
            "job must resolve inside one. Default: the server's working directory."})
    java.util.List<Path> roots = new java.util.ArrayList<>();

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
            server = ControlServer.start(new ControlServer.Options(bind, port, tokenFile, tlsCert, tlsKey, maxMessageBytes, metricsPort, roots, insecureLocal), jobs);
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
                + (tokenFile != null ? " (bearer token required)" : " (no token: --insecure-local)") + (tlsCert != null ? " (TLS)" : "")
                + (server.metricsPort() != null ? "; metrics on :" + server.metricsPort() + "/metrics" : ""));
        System.out.flush();
        server.awaitTermination();
        return 0;
    }
}
