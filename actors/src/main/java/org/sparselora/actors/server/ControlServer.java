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
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

/**
 * The {@code sparselora serve} process's network side: the SparseLoraControl service on
 * {@code bind:port} (loopback by default), a bearer token checked on every call when a token file
 * is given (required for any non-loopback address: start-up is refused otherwise), optional TLS,
 * a maximum inbound message size, and — only with {@code --metrics-port} — Prometheus metrics at
 * {@code http://bind:port/metrics}.
 */
public final class ControlServer implements AutoCloseable {

    public static final int DEFAULT_MAX_MESSAGE_BYTES = 4 << 20;

    public record Options(String bind, int port, Path tokenFile, Path tlsCert, Path tlsKey, int maxMessageBytes, Integer metricsPort) {
        public static Options loopback(int port) { return new Options("127.0.0.1", port, null, null, null, DEFAULT_MAX_MESSAGE_BYTES, null); }
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
        String token = null;
        if (o.tokenFile() != null) {
            if (!Files.isReadable(o.tokenFile())) throw new IllegalArgumentException("--token-file " + o.tokenFile() + ": cannot read it");
            token = Files.readString(o.tokenFile(), StandardCharsets.UTF_8).trim();
            if (token.isEmpty()) throw new IllegalArgumentException("--token-file " + o.tokenFile() + ": the file is empty");
        }
        if (!addr.isLoopbackAddress() && token == null)
            throw new IllegalArgumentException("--bind " + o.bind() + " is not a loopback address: refusing to serve it without --token-file");
        if ((o.tlsCert() == null) != (o.tlsKey() == null))
            throw new IllegalArgumentException("--tls-cert and --tls-key must be given together");
        if (o.maxMessageBytes() < 1024) throw new IllegalArgumentException("--max-message-bytes must be >= 1024, got " + o.maxMessageBytes());
        ServerCredentials creds = o.tlsCert() == null ? InsecureServerCredentials.create()
                : TlsServerCredentials.create(o.tlsCert().toFile(), o.tlsKey().toFile());
        var service = StrictParsing.wrap(new ControlService(jobs).bindService());
        NettyServerBuilder b = NettyServerBuilder.forAddress(new InetSocketAddress(addr, o.port()), creds)
                .maxInboundMessageSize(o.maxMessageBytes()).maxInboundMetadataSize(16 << 10)
                .addService(token == null ? ServerInterceptors.intercept(service) : ServerInterceptors.intercept(service, new BearerTokenInterceptor(token)));
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
