package org.sparselora.actors.server;

import io.grpc.Metadata;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.Status;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;

/**
 * Checks {@code authorization: Bearer <token>} on every call before any handler runs; a missing or
 * wrong token ends the call with UNAUTHENTICATED and nothing else happens. The comparison takes
 * the same time however much of the token matches.
 */
public final class BearerTokenInterceptor implements ServerInterceptor {

    public static final Metadata.Key<String> AUTHORIZATION = Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

    private final byte[] token;

    public BearerTokenInterceptor(String token) {
        if (token == null || token.isBlank()) throw new IllegalArgumentException("empty token");
        this.token = token.getBytes(StandardCharsets.UTF_8);
    }

    @Override
    public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
        String h = headers.get(AUTHORIZATION);
        String problem = null;
        if (h == null) problem = "missing bearer token (authorization header)";
        else if (!h.regionMatches(true, 0, "Bearer ", 0, 7)) problem = "authorization header is not a bearer token";
        else if (!MessageDigest.isEqual(h.substring(7).trim().getBytes(StandardCharsets.UTF_8), token)) problem = "invalid bearer token";
        if (problem != null) {
            call.close(Status.UNAUTHENTICATED.withDescription(problem), new Metadata());
            return new ServerCall.Listener<>() {};
        }
        return next.startCall(call, headers);
    }
}
