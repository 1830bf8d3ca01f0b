package org.sparselora.actors.server;

import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.Metadata;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.Status;
import java.nio.charset.StandardCharsets;

/**
 * Checks {@code authorization: Bearer <token>} on every call before any handler runs and binds
 * the {@link Caller} the token belongs to into the call's context ({@link #CALLER}); a missing,
 * oversized or unknown token ends the call with UNAUTHENTICATED and nothing else happens. Token
 * comparison takes the same time however much of a token matches. Without a token file
 * ({@code --insecure-local}) every call is {@link Caller#LOCAL}.
 */
public final class BearerTokenInterceptor implements ServerInterceptor {

    public static final Metadata.Key<String> AUTHORIZATION = Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
    /** The caller of the current call (set by this interceptor; {@link Caller#LOCAL} when no interceptor ran). */
    public static final Context.Key<Caller> CALLER = Context.keyWithDefault("sparselora-caller", Caller.LOCAL);
    /** Longer authorization headers are refused before any comparison. */
    static final int MAX_HEADER = 1024;

    private final Tokens tokens;

    public BearerTokenInterceptor(Tokens tokens) {
        this.tokens = tokens;
    }

    @Override
    public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
        String h = headers.get(AUTHORIZATION);
        String problem = null;
        Caller who = null;
        if (h == null) problem = "missing bearer token (authorization header)";
        else if (h.length() > MAX_HEADER) problem = "authorization header is longer than " + MAX_HEADER + " characters";
        else if (!h.regionMatches(true, 0, "Bearer ", 0, 7)) problem = "authorization header is not a bearer token";
        else if ((who = tokens.lookup(h.substring(7).trim().getBytes(StandardCharsets.UTF_8))) == null) problem = "invalid bearer token";
        if (problem != null) {
            call.close(Status.UNAUTHENTICATED.withDescription(problem), new Metadata());
            return new ServerCall.Listener<>() {};
        }
        return Contexts.interceptCall(Context.current().withValue(CALLER, who), call, headers, next);
    }
}
