package org.sparselora.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.spi.ToolProvider;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.model.LlamaModel;

/**
 * The engine's packages depend on each other without cycles: jdeps reads the compiled main classes
 * (every reference the compiler kept, imports or fully qualified names alike), and the package graph's
 * strongly connected components must be single packages — except one known component, {io, lora,
 * model}, which comes from the model's architecture description ({@code LlamaConfig},
 * {@code Projection}) living in {@code model} while {@code io} parses it and {@code lora} sizes
 * adapters from it. A new cycle, or a package drawn into that one, fails here.
 */
class PackageCyclesTest {

    private static final String ROOT = "org.sparselora.engine.";
    private static final Set<String> KNOWN = Set.of("io", "lora", "model");

    @Test
    void enginePackagesHaveNoCycles() throws Exception {
        Map<String, Set<String>> deps = packageGraph();
        assertTrue(deps.keySet().containsAll(List.of("backend", "backend.cpu", "model", "sparse", "train")), "jdeps saw " + deps.keySet());
        List<Set<String>> cycles = new ArrayList<>();
        for (Set<String> scc : stronglyConnected(deps)) if (scc.size() > 1) cycles.add(scc);
        assertEquals(List.of(new TreeSet<>(KNOWN)), cycles, "package cycles in engine (edges: " + deps + ")");
    }

    @Test
    void theNamedLayersHoldTheirDirection() throws Exception {
        Map<String, Set<String>> deps = packageGraph();
        for (String[] e : new String[][] {{"model", "sparse"}, {"model", "train"}, {"sparse", "train"}, {"backend.cpu", "io"},
                {"backend", "model"}, {"lora", "sparse"}})
            assertTrue(!deps.getOrDefault(e[0], Set.of()).contains(e[1]), e[0] + " must not depend on " + e[1] + ": " + deps.get(e[0]));
    }

    /** engine package (without the root prefix) → the engine packages it references. */
    private static Map<String, Set<String>> packageGraph() throws Exception {
        Path classes = Path.of(LlamaModel.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        ToolProvider jdeps = ToolProvider.findFirst("jdeps").orElseThrow(() -> new AssertionError("this JDK has no jdeps tool"));
        StringWriter out = new StringWriter(), err = new StringWriter();
        int rc = jdeps.run(new PrintWriter(out), new PrintWriter(err), "-verbose:package", "-filter:none", classes.toString());
        assertEquals(0, rc, "jdeps failed: " + err);
        Pattern edge = Pattern.compile("^\\s+" + Pattern.quote(ROOT) + "(\\S+)\\s+->\\s+" + Pattern.quote(ROOT) + "(\\S+)");
        Map<String, Set<String>> deps = new TreeMap<>();
        for (String line : out.toString().split("\\R")) {
            Matcher m = edge.matcher(line);
            if (!m.find()) continue;
            deps.computeIfAbsent(m.group(1), k -> new TreeSet<>());
            deps.computeIfAbsent(m.group(2), k -> new TreeSet<>());
            if (!m.group(1).equals(m.group(2))) deps.get(m.group(1)).add(m.group(2));
        }
        return deps;
    }

    /** Tarjan's strongly connected components. */
    private static List<Set<String>> stronglyConnected(Map<String, Set<String>> g) {
        Map<String, Integer> index = new HashMap<>(), low = new HashMap<>();
        Deque<String> stack = new ArrayDeque<>();
        Set<String> onStack = new TreeSet<>();
        List<Set<String>> out = new ArrayList<>();
        int[] next = {0};
        for (String v : g.keySet()) if (!index.containsKey(v)) connect(v, g, index, low, stack, onStack, out, next);
        return out;
    }

    private static void connect(String v, Map<String, Set<String>> g, Map<String, Integer> index, Map<String, Integer> low,
                                Deque<String> stack, Set<String> onStack, List<Set<String>> out, int[] next) {
        index.put(v, next[0]);
        low.put(v, next[0]++);
        stack.push(v);
        onStack.add(v);
        for (String w : g.getOrDefault(v, Set.of())) {
            if (!index.containsKey(w)) {
                connect(w, g, index, low, stack, onStack, out, next);
                low.put(v, Math.min(low.get(v), low.get(w)));
            } else if (onStack.contains(w)) {
                low.put(v, Math.min(low.get(v), index.get(w)));
            }
        }
        if (low.get(v).equals(index.get(v))) {
            Set<String> scc = new TreeSet<>();
            String w;
            do { w = stack.pop(); onStack.remove(w); scc.add(w); } while (!w.equals(v));
            out.add(scc);
        }
    }
}
