package org.sparselora.bench.cpu;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.util.Map;
import java.util.TreeMap;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.RowBlockMode;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.RandomWeights;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.engine.model.Batch;

/**
 * Where a training step's time goes, per Backend op: wraps the CPU backend in a timing proxy and
 * runs dense and sparse steps of the step benchmark model. {@code OpProfile [threads] [steps]}.
 */
public final class OpProfile {
    public static void main(String[] args) {
        int threads = args.length > 0 ? Integer.parseInt(args[0]) : Runtime.getRuntime().availableProcessors();
        int steps = args.length > 1 ? Integer.parseInt(args[1]) : 2;
        boolean shapes = args.length > 2 && args[2].equals("shapes");
        CpuStepReport.cpuClock = threads == 1; // one thread: its CPU time, robust on a busy machine
        try (CpuBackend cpu = new CpuBackend(threads)) {
            Map<String, long[]> acc = new TreeMap<>();
            Backend be = (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[] {Backend.class}, (p, m, a) -> {
                long t0 = CpuStepReport.now();
                try {
                    return m.invoke(cpu, a);
                } catch (InvocationTargetException e) {
                    throw e.getCause();
                } finally {
                    String key = m.getName();
                    if (key.equals("matmul") && shapes) {
                        var c = (org.sparselora.engine.backend.Tensor) a[0];
                        var x0 = (org.sparselora.engine.backend.Tensor) a[1];
                        int kk = (Boolean) a[2] ? x0.dim(0) : x0.dim(-1);
                        key = "matmul " + c.dim(0) + "x" + kk + "x" + c.dim(-1) + ((Boolean) a[2] ? " tA" : "") + ((Boolean) a[4] ? " tB" : "");
                    }
                    long[] x = acc.computeIfAbsent(key, k -> new long[2]);
                    x[0] += CpuStepReport.now() - t0;
                    x[1]++;
                }
            });
            LlamaConfig c = BenchModels.stepModel();
            LlamaModel model = new LlamaModel(be, LlamaWeights.upload(be, new RandomWeights(c, 1)));
            model.setRowBlockMode(RowBlockMode.fromProperty());   // -Dsparselora.rowBlocks
            LoraAdapter lora = new LoraAdapter(be, c, BenchModels.lora());
            Batch b = BenchModels.batch(c, 4, 256, 0.75, 3);
            for (String mode : new String[] {"dense", "sliced", "cut"}) {
                SparsePlan plan = mode.equals("dense") ? null : BenchModels.plan(be, c, b, BenchModels.math10kScaled(), SparsePlan.FrozenGrad.valueOf(mode.toUpperCase()), 5);
                model.forward(b, lora, plan, 0);
                model.backward();
                acc.clear();
                long t0 = CpuStepReport.now();
                for (int i = 0; i < steps; i++) { model.forward(b, lora, plan, i); model.backward(); }
                double total = (CpuStepReport.now() - t0) / 1e6 / steps;
                System.out.printf("%n%s: %.1f ms/step%n", mode, total);
                acc.entrySet().stream().sorted((x, y) -> Long.compare(y.getValue()[0], x.getValue()[0])).limit(shapes ? 30 : 12)
                        .forEach(e -> System.out.printf("  %-20s %8.1f ms  %5d calls%n", e.getKey(), e.getValue()[0] / 1e6 / steps, e.getValue()[1] / steps));
            }
        }
    }
}
