package org.sparselora.arcagi;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.model.Batch;

/** The real ARC-AGI-1 and -2 training sets: the split, every grid through the tokenizer, and the pretraining stream. */
@Tag("shared-data")
class ArcDataTest {

    static Path data() {
        Path d = Path.of(System.getProperty("sparselora.shared", "../shared")).toAbsolutePath().normalize().resolve("data");
        if (!Files.isDirectory(d.resolve("arc-agi/training")) || !Files.isDirectory(d.resolve("arc-agi-2/training")))
            throw new IllegalStateException("ARC data missing under " + d + ": pass -Dsparselora.shared=<dir holding data/>");
        return d;
    }

    @Test
    void theSplitHoldsOutEightyArcAgi1TasksAndTheirArcAgi2Copies() throws Exception {
        Path arc1 = data().resolve("arc-agi/training"), arc2 = data().resolve("arc-agi-2/training");
        ArcSplit s = ArcSplit.of(arc1, arc2);
        TreeSet<String> one = new TreeSet<>(ArcSplit.tasks(arc1).keySet()), two = new TreeSet<>(ArcSplit.tasks(arc2).keySet());
        assertEquals(400, one.size());
        assertEquals(624, two.size());
        List<String> val = ArcSplit.ids(s.validation()), train = ArcSplit.ids(s.train());
        assertEquals(new ArrayList<>(one).subList(0, 80), val);
        Set<String> overlap = new HashSet<>(train);
        overlap.retainAll(val);
        assertTrue(overlap.isEmpty(), overlap.toString());
        Set<String> copies = new HashSet<>(val);
        copies.retainAll(two);
        assertTrue(!copies.isEmpty(), "some validation tasks have ARC-AGI-2 copies, and they are held out too");
        Set<String> all = new HashSet<>(one);
        all.addAll(two);
        assertEquals(all.size() - 80, train.size(), "every other task trains, once");
        assertEquals(train.size(), new HashSet<>(train).size());
    }

    @Test
    void everyGridOfBothSetsRoundTripsThroughTheTokenizer() throws Exception {
        int pairs = 0, longestTarget = 0;
        for (String set : List.of("arc-agi/training", "arc-agi-2/training"))
            for (Path f : ArcSplit.tasks(data().resolve(set)).values()) {
                ArcTask t = ArcTask.load(f);
                List<ArcTask.Pair> ps = new ArrayList<>(t.train());
                ps.addAll(t.test());
                for (ArcTask.Pair p : ps) {
                    for (int[][] g : new int[][][] {p.input(), p.output()}) {
                        int[] ids = ArcFormat.target(g);
                        longestTarget = Math.max(longestTarget, ids.length);
                        assertArrayEquals(g, ArcFormat.decode(ids, false).grid(), f.toString());
                    }
                    pairs++;
                }
            }
        assertTrue(pairs > 1302 + 416, "pairs: " + pairs);
        assertTrue(longestTarget <= ArcFormat.MAX_TARGET);
        assertEquals(ArcFormat.MAX_TARGET, longestTarget, "30x30 grids occur");
    }

    @Test
    void thePretrainingStreamPacksRealTasks() throws Exception {
        ArcSplit s = ArcSplit.of(data().resolve("arc-agi/training"), data().resolve("arc-agi-2/training"));
        List<ArcTask> tasks = new ArrayList<>();
        for (Path f : s.train().subList(0, 50)) tasks.add(ArcTask.load(f));
        PretrainStream stream = new PretrainStream(tasks, 8192, 1, true);
        Batch b = stream.nextBatch(4);
        assertEquals(4 * 8192, b.tokenCount());
        assertTrue(b.outputTokenCount() > 1000, "loss tokens: " + b.outputTokenCount());
        for (int r = 0; r < 4; r++) assertEquals(ArcTokenizer.EOS, b.tokens()[r * 8192 + 8191]);
    }
}
