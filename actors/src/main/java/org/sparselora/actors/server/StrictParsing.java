package org.sparselora.actors.server;

import io.grpc.Attributes;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerMethodDefinition;
import io.grpc.ServerServiceDefinition;
import io.grpc.Status;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;

/**
 * Makes an undecodable request an INVALID_ARGUMENT. grpc-java parses requests before any handler
 * or interceptor sees them and turns a parse failure into UNKNOWN ("Application error processing
 * RPC"); here each method receives raw bytes instead and parses them itself, closing the call
 * with INVALID_ARGUMENT when they are not a valid message of the request type.
 */
final class StrictParsing {

    private StrictParsing() {}

    static ServerServiceDefinition wrap(ServerServiceDefinition service) {
        ServerServiceDefinition.Builder b = ServerServiceDefinition.builder(service.getServiceDescriptor().getName());
        for (ServerMethodDefinition<?, ?> m : service.getMethods()) b.addMethod(wrapMethod(m));
        return b.build();
    }

    private static <Q, R> ServerMethodDefinition<byte[], R> wrapMethod(ServerMethodDefinition<Q, R> def) {
        MethodDescriptor<Q, R> typed = def.getMethodDescriptor();
        MethodDescriptor<byte[], R> raw = typed.toBuilder(new Bytes(), typed.getResponseMarshaller()).build();
        ServerCallHandler<byte[], R> handler = (call, headers) -> {
            ServerCall.Listener<Q> inner = def.getServerCallHandler().startCall(new TypedCall<>(call, typed), headers);
            return new ServerCall.Listener<>() {
                private boolean rejected;

                @Override
                public void onMessage(byte[] bytes) {
                    if (rejected) return;
                    Q msg;
                    try {
                        msg = typed.parseRequest(new ByteArrayInputStream(bytes));
                    } catch (RuntimeException e) {
                        rejected = true;
                        call.close(Status.INVALID_ARGUMENT.withDescription("request is not a valid "
                                + typed.getFullMethodName() + " message"), new Metadata());
                        return;
                    }
                    inner.onMessage(msg);
                }

                @Override
                public void onHalfClose() { if (!rejected) inner.onHalfClose(); }

                @Override
                public void onCancel() { inner.onCancel(); }

                @Override
                public void onComplete() { if (!rejected) inner.onComplete(); }

                @Override
                public void onReady() { if (!rejected) inner.onReady(); }
            };
        };
        return ServerMethodDefinition.create(raw, handler);
    }

    /** The byte-level call seen through the typed method's descriptor. */
    private static final class TypedCall<Q, R> extends ServerCall<Q, R> {
        private final ServerCall<byte[], R> call;
        private final MethodDescriptor<Q, R> method;

        TypedCall(ServerCall<byte[], R> call, MethodDescriptor<Q, R> method) {
            this.call = call;
            this.method = method;
        }

        @Override public void request(int n) { call.request(n); }
        @Override public void sendHeaders(Metadata h) { call.sendHeaders(h); }
        @Override public void sendMessage(R m) { call.sendMessage(m); }
        @Override public void close(Status s, Metadata t) { call.close(s, t); }
        @Override public boolean isCancelled() { return call.isCancelled(); }
        @Override public boolean isReady() { return call.isReady(); }
        @Override public void setMessageCompression(boolean e) { call.setMessageCompression(e); }
        @Override public void setCompression(String c) { call.setCompression(c); }
        @Override public Attributes getAttributes() { return call.getAttributes(); }
        @Override public String getAuthority() { return call.getAuthority(); }
        @Override public MethodDescriptor<Q, R> getMethodDescriptor() { return method; }
    }

    private static final class Bytes implements MethodDescriptor.Marshaller<byte[]> {
        @Override
        public InputStream stream(byte[] value) { return new ByteArrayInputStream(value); }

        @Override
        public byte[] parse(InputStream in) {
            try {
                return in.readAllBytes();
            } catch (IOException e) {
                throw Status.INTERNAL.withDescription("cannot read the request").withCause(e).asRuntimeException();
            }
        }
    }
}
