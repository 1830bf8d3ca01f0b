package org.sparselora.bench.step;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.RowBlockMode;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.engine.sparse.SparsePlanner;
import org.sparselora.engine.model.Batch;

/**
 * Where a step's time goes, per Backend operation: the backend is wrapped in a proxy that waits for
 * the device before and after every call, so each op's wall time is its own (the sum exceeds the
 * un-profiled step by the lost overlap and the syncs). GEMMs are keyed by their M×K×N shape.
 */
final class OpTimes {
    private OpTimes() {}

    private static final StackWalker WALKER = StackWalker.getInstance();

    /** Whether the current op was called by the channel selection (the predictor), not the model. */
    private static boolean fromPredictor() {
        return WALKER.walk(f -> f.anyMatch(x -> x.getClassName().startsWith("org.sparselora.engine.sparse.ChannelSelection")));
    }

    /**
     * {@code planners} makes the SparseLoRA planner on the given backend: the profile builds its own
     * on the timing proxy, so the predictor's ops are timed too (listed as "predictor …").
     */
    static void profile(Backend real, LlamaWeights w, LoraAdapter lora, Batch b, java.util.function.Function<Backend, SparsePlanner> planners,
                        int steps, int sparseStep, int layers) {
        Map<String, long[]> acc = new TreeMap<>();
        Backend be = (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[] {Backend.class}, (p, m, a) -> {
            String name = m.getName();
            boolean timed = !name.equals("synchronize") && !name.equals("name") && !name.equals("computeType");
            if (timed) real.synchronize();
            long t0 = System.nanoTime();
            try {
                return m.invoke(real, a);
            } catch (InvocationTargetException e) {
                throw e.getCause();
            } finally {
                if (timed) {
                    real.synchronize();
                    String key = name;
                    if (fromPredictor()) key = "predictor " + name;
                    if (name.equals("matmul")) {
                        Tensor c = (Tensor) a[0], x = (Tensor) a[1];
                        int k = (Boolean) a[2] ? x.dim(0) : x.dim(-1);
                        key = String.format("matmul %dx%dx%d", c.dim(0), k, c.dim(-1));
                    }
                    long[] v = acc.computeIfAbsent(key, kk -> new long[2]);
                    v[0] += System.nanoTime() - t0;
                    v[1]++;
                }
            }
        });
        // the model and planner run on the proxy; weights and adapter tensors are the real backend's
        // closed at the end: its activation buffers (a second full set) would otherwise stay in the
        // device pool and inflate every later row's peak memory
        try (LlamaModel m = new LlamaModel(be, w, Math.max(b.seqLen(), 1024)); SparsePlanner planner = planners.apply(be)) {
            m.setRowBlockMode(RowBlockMode.fromProperty());   // -Dsparselora.rowBlocks
            profile(real, m, acc, lora, b, planner, steps, sparseStep);
        }
    }

    private static void profile(Backend real, LlamaModel m, Map<String, long[]> acc, LoraAdapter lora, Batch b, SparsePlanner planner, int steps, int sparseStep) {
        for (String variant : new String[] {"dense", "sparse"}) {
            for (int s = -1; s < steps; s++) {
                if (s == 0) acc.clear(); // step -1 allocates this variant's buffers: not counted
                if (variant.equals("sparse") && planner == null) break;
                SparsePlan plan = variant.equals("sparse") ? planner.plan(b, sparseStep) : null;
                long t0 = System.nanoTime();
                m.forward(b, lora, plan, plan != null ? planner.selector() : null, s);
                m.backward();
                real.synchronize();
                if (plan != null) planner.release();
                long[] tot = acc.computeIfAbsent("(step total, wall)", kk -> new long[2]);
                tot[0] += System.nanoTime() - t0;
                tot[1]++;
                lora.zeroGrads();
            }
            List<Map.Entry<String, long[]>> rows = new ArrayList<>(acc.entrySet());
            rows.sort((x, y) -> Long.compare(y.getValue()[0], x.getValue()[0]));
            long opsSum = 0;
            for (var e : rows) if (!e.getKey().startsWith("(")) opsSum += e.getValue()[0];
            System.out.printf("%nper-op time, %s step (fwd+bwd, %d steps, synced per op): ops sum %.1f ms/step%n", variant, steps, opsSum / 1e6 / steps);
            System.out.printf("%-34s %10s %8s %7s%n", "op", "ms/step", "calls", "share");
            for (var e : rows.subList(0, Math.min(45, rows.size())))
                System.out.printf("%-34s %10.2f %8d %6.1f%%%n", e.getKey(), e.getValue()[0] / 1e6 / steps, e.getValue()[1] / steps,
                        100.0 * e.getValue()[0] / Math.max(1, opsSum));
        }
    }
}
