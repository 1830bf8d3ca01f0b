package org.sparselora.engine.backend;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;

/**
 * A CPU stand-in for a backend that records graphs (CUDA graphs on the GPU), for testing the code
 * that records and replays training steps without a GPU. It wraps a {@link Backend} in a proxy:
 * between {@link org.sparselora.engine.backend.GraphCapture#beginCapture()} and {@link org.sparselora.engine.backend.GraphCapture#endCapture()} every op is recorded as
 * (method, arguments) instead of run, and {@link org.sparselora.engine.backend.GraphCapture.Captured#replay()} runs the recorded calls
 * again on the same tensors with the same arguments — exactly the contract of a CUDA graph. As on
 * the GPU, tensors may be made while recording ({@code empty}; {@code zeros} records its fill) and
 * anything that waits for the device or moves host data throws while recording, so a step that
 * would bake a host value into a recording, or read a tensor nobody refills before a replay, shows
 * up as a wrong result against the eager run.
 */
public final class RecordingBackend {
    private RecordingBackend() {}

    private static final Set<String> HOST = Set.of("toFloats", "toInts", "copyFromHost", "fromFloats", "fromInts",
            "synchronize", "sumOfSquares", "adamwGroup", "close");

    /** Call counts of a proxy made by {@link #wrap}: ops recorded and ops replayed. */
    public static final class Stats {
        public long recorded, replayed;
    }

    public static Backend wrap(Backend target, Stats stats) {
        final List<Object[]>[] rec = new List[1];
        return (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[] {Backend.class, SparseOps.class, GraphCapture.class}, (proxy, m, args) -> {
            String n = m.getName();
            switch (n) {
                // the capabilities are the proxy itself, so their ops are recorded too
                case "sparse", "backend": return proxy;
                case "graphCapture": return java.util.Optional.of(proxy);
                case "canCapture": return true;
                case "beginCapture":
                    if (rec[0] != null) throw new IllegalStateException("a recording is already running");
                    rec[0] = new ArrayList<>();
                    return null;
                case "endCapture": {
                    if (rec[0] == null) throw new IllegalStateException("no recording is running");
                    List<Object[]> calls = rec[0];
                    rec[0] = null;
                    stats.recorded += calls.size();
                    return new GraphCapture.Captured() {
                        boolean closed;
                        @Override public void replay() {
                            if (closed) throw new IllegalStateException("recording closed");
                            if (rec[0] != null) throw new IllegalStateException("replay while recording");
                            for (Object[] c : calls) invoke(target, (Method) c[0], (Object[]) c[1]);
                            stats.replayed += calls.size();
                        }
                        @Override public void close() { closed = true; }
                    };
                }
                case "abortCapture": rec[0] = null; return null;
                case "equals": return proxy == args[0];
                case "hashCode": return System.identityHashCode(proxy);
                case "toString": return "recording(" + target.name() + ")";
                default:
            }
            if (rec[0] == null) return invoke(target, m, args);
            if (n.equals("empty") || n.equals("name") || n.equals("computeType")) return invoke(target, m, args);
            if (n.equals("zeros")) {
                Tensor t = target.empty((DType) args[0], (int[]) args[1]);
                rec[0].add(new Object[] {Backend.class.getMethod("fill", Tensor.class, float.class), new Object[] {t, 0f}});
                return t;
            }
            if (HOST.contains(n)) throw new IllegalStateException(n + " waits for the device or moves host data and cannot run while recording");
            if (m.getReturnType() != void.class) throw new IllegalStateException(n + " returns a value and cannot be recorded");
            rec[0].add(new Object[] {m, args == null ? new Object[0] : args.clone()});
            return null;
        });
    }

    private static Object invoke(Backend target, Method m, Object[] args) {
        try {
            return m.invoke(target, args);
        } catch (InvocationTargetException e) {
            if (e.getCause() instanceof RuntimeException r) throw r;
            if (e.getCause() instanceof Error er) throw er;
            throw new IllegalStateException(e.getCause());
        } catch (IllegalAccessException e) {
            throw new IllegalStateException(e);
        }
    }
}
