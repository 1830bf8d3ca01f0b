package org.sparselora.actors.server;

import com.sun.net.httpserver.HttpServer;
import io.grpc.InsecureServerCredentials;
import io.grpc.Server;
import io.grpc.ServerCredentials;
import io.grpc.ServerInterceptors;
import io.grpc.TlsServerCredentials;
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder;
import io.micrometer.prometheusmetrics.PrometheusConfig;
import io.micrometer.prometheusmetrics.PrometheusMeterRegistry;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The {@code sparselora serve} process's network side: the SparseLoraControl service on
 * {@code bind:port} (loopback by default), a bearer token checked on every call (a token file of
 * named clients is required, on loopback too unless {@code --insecure-local}), job paths confined
 * to the roots ({@link PathPolicy}), optional TLS,
 * a maximum inbound message size, and — only with {@code --metrics-port} — Prometheus metrics at
 * {@code http://bind:port/metrics}.
 */
public final class ControlServer implements AutoCloseable {

    public static final int DEFAULT_MAX_MESSAGE_BYTES = 4 << 20;

    /**
     * @param roots         directories a job's paths must lie in (empty: the working directory)
     * @param insecureLocal serve a loopback address without a token file: every local user is the same admin client
     */
    public record Options(String bind, int port, Path tokenFile, Path tlsCert, Path tlsKey, int maxMessageBytes, Integer metricsPort,
                          List<Path> roots, boolean insecureLocal) {
        public Options {
            roots = List.copyOf(roots);
        }

        /** The earlier form: no roots (the working directory), a token file required. */
        public Options(String bind, int port, Path tokenFile, Path tlsCert, Path tlsKey, int maxMessageBytes, Integer metricsPort) {
            this(bind, port, tokenFile, tlsCert, tlsKey, maxMessageBytes, metricsPort, List.of(), false);
        }
    }

    private final Server server;
    private final HttpServer metrics;

    private ControlServer(Server server, HttpServer metrics) {
        this.server = server;
        this.metrics = metrics;
    }

    public static ControlServer start(Options o, JobManager jobs) throws IOException {
        InetAddress addr;
        try {
            addr = InetAddress.getByName(o.bind());
        } catch (java.net.UnknownHostException e) {
            throw new IllegalArgumentException("--bind '" + o.bind() + "': not an IP address or a host name this machine resolves");
        }
        Tokens tokens = o.tokenFile() == null ? null : Tokens.read(o.tokenFile());
        if (!addr.isLoopbackAddress() && tokens == null)
            throw new IllegalArgumentException("--bind " + o.bind() + " is not a loopback address: refusing to serve it without --token-file");
        if (tokens == null && !o.insecureLocal())
            throw new IllegalArgumentException("a token file is required (--token-file): without one every user of this machine could run jobs"
                    + " with the server's file rights; pass --insecure-local to serve loopback without tokens anyway");
        if (tokens != null && o.insecureLocal())
            throw new IllegalArgumentException("--insecure-local and --token-file exclude each other");
        PathPolicy paths = o.roots().isEmpty() ? PathPolicy.workingDirectory() : new PathPolicy(o.roots());
        if ((o.tlsCert() == null) != (o.tlsKey() == null))
            throw new IllegalArgumentException("--tls-cert and --tls-key must be given together");
        if (o.maxMessageBytes() < 1024) throw new IllegalArgumentException("--max-message-bytes must be >= 1024, got " + o.maxMessageBytes());
        ServerCredentials creds = o.tlsCert() == null ? InsecureServerCredentials.create()
                : TlsServerCredentials.create(o.tlsCert().toFile(), o.tlsKey().toFile());
        var service = StrictParsing.wrap(new ControlService(jobs, paths).bindService());
        NettyServerBuilder b = NettyServerBuilder.forAddress(new InetSocketAddress(addr, o.port()), creds)
                // headers up to 256 KiB reach the token check, which refuses an oversized one as UNAUTHENTICATED
                // (beyond the transport's limit a call can only be reset, which clients report as INTERNAL)
                .maxInboundMessageSize(o.maxMessageBytes()).maxInboundMetadataSize(256 << 10)
                .addService(tokens == null ? ServerInterceptors.intercept(service) : ServerInterceptors.intercept(service, new BearerTokenInterceptor(tokens)));
        HttpServer http = null;
        if (o.metricsPort() != null) {
            PrometheusMeterRegistry registry = new PrometheusMeterRegistry(PrometheusConfig.DEFAULT);
            jobs.bindMetrics(registry);
            http = HttpServer.create(new InetSocketAddress(addr, o.metricsPort()), 0);
            http.createContext("/metrics", ex -> {
                byte[] body = registry.scrape().getBytes(StandardCharsets.UTF_8);
                ex.getResponseHeaders().set("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
                ex.sendResponseHeaders(200, body.length);
                try (OutputStream os = ex.getResponseBody()) {
                    os.write(body);
                }
            });
            http.start();
        }
        Server s = b.build().start();
        return new ControlServer(s, http);
    }

    public int port() { return server.getPort(); }

    public Integer metricsPort() { return metrics == null ? null : metrics.getAddress().getPort(); }

    public void awaitTermination() throws InterruptedException { server.awaitTermination(); }

    @Override
    public void close() throws InterruptedException {
        server.shutdown();
        if (!server.awaitTermination(5, TimeUnit.SECONDS)) server.shutdownNow();
        if (metrics != null) metrics.stop(0);
    }

}
