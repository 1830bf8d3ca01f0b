package org.sparselora.actors.cli;

import io.grpc.ChannelCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.TlsChannelCredentials;
import io.grpc.stub.MetadataUtils;
import java.io.IOException;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.sparselora.actors.server.BearerTokenInterceptor;
import org.sparselora.proto.control.SparseLoraControlGrpc;
import picocli.CommandLine.Option;

/** How the client commands reach a server: address, token, TLS. */
public final class ClientOptions {

    @Option(names = "--server", paramLabel = "HOST:PORT", description = "server address (default: ${DEFAULT-VALUE}, or $SPARSELORA_SERVER)",
            defaultValue = "${env:SPARSELORA_SERVER:-127.0.0.1:7070}")
    String server;

    @Option(names = "--token-file", paramLabel = "FILE", description = "file holding the server's bearer token (or $SPARSELORA_TOKEN_FILE)",
            defaultValue = "${env:SPARSELORA_TOKEN_FILE}")
    Path tokenFile;

    @Option(names = "--tls", description = "connect with TLS")
    boolean tls;

    @Option(names = "--tls-ca", paramLabel = "PEM", description = "CA certificate(s) to trust for TLS (implies --tls)")
    Path tlsCa;

    /** A blocking stub and the channel behind it (close the channel when done). */
    public record Client(ManagedChannel channel, SparseLoraControlGrpc.SparseLoraControlBlockingStub stub) implements AutoCloseable {
        @Override
        public void close() throws InterruptedException {
            channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
        }
    }

    public Client connect() throws IOException {
        int colon = server.lastIndexOf(':');
        if (colon <= 0 || colon == server.length() - 1) throw new IllegalArgumentException("--server '" + server + "': expected HOST:PORT");
        String host = server.substring(0, colon);
        int port;
        try {
            port = Integer.parseInt(server.substring(colon + 1));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--server '" + server + "': port is not a number");
        }
        ChannelCredentials creds = InsecureChannelCredentials.create();
        if (tls || tlsCa != null) {
            TlsChannelCredentials.Builder b = TlsChannelCredentials.newBuilder();
            if (tlsCa != null) b.trustManager(tlsCa.toFile());
            creds = b.build();
        }
        ManagedChannel ch = Grpc.newChannelBuilderForAddress(host, port, creds).maxInboundMessageSize(64 << 20).build();
        var stub = SparseLoraControlGrpc.newBlockingStub(ch);
        if (tokenFile != null) {
            Metadata md = new Metadata();
            md.put(BearerTokenInterceptor.AUTHORIZATION, "Bearer " + org.sparselora.actors.server.Tokens.clientToken(tokenFile));
            stub = stub.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md));
        }
        return new Client(ch, stub);
    }
}
