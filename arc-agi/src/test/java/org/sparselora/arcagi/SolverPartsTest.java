package org.sparselora.arcagi;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.data.TokenizedExample;
import org.sparselora.engine.model.Batch;

/** Leave-one-out data, voting, ARC Prize files and scoring, the validation split, the pretraining stream. */
class SolverPartsTest {

    @TempDir
    Path dir;

    static final ArcTask TASK = new ArcTask("t1", List.of(
            new ArcTask.Pair(new int[][] {{1, 0}, {0, 0}}, new int[][] {{0, 1}, {0, 0}}),
            new ArcTask.Pair(new int[][] {{2, 2}, {0, 3}}, new int[][] {{2, 2}, {3, 0}}),
            new ArcTask.Pair(new int[][] {{5, 0, 0}}, new int[][] {{0, 0, 5}})),
            List.of(new ArcTask.Pair(new int[][] {{7, 0}, {0, 8}}, new int[][] {{0, 7}, {8, 0}})));

    @Test
    void leaveOneOutHoldsOutEachDemonstrationUnderEachAugmentation() {
        LeaveOneOut.Data d = LeaveOneOut.examples(TASK, 12, 4096, 1, true);
        assertEquals(12, d.examples().size());
        assertEquals(0, d.tooLong());
        List<Augmentation> augs = Augmentation.plan(4, 2, 1, true);
        for (int k = 0; k < 12; k++) {
            int a = k / 3, i = k % 3;
            List<ArcTask.Pair> rest = new ArrayList<>(TASK.train());
            ArcTask.Pair held = rest.remove(i);
            TokenizedExample e = d.examples().get(k);
            ArcTask.Pair q = augs.get(a).apply(held);
            assertArrayEquals(ArcFormat.prompt(augs.get(a).applyDemos(rest), q.input()), e.prompt(), "example " + k);
            assertArrayEquals(ArcFormat.target(q.output()), e.response());
        }
        // the first three are the plain task: demo i held out, the others as demonstrations
        assertArrayEquals(ArcFormat.target(new int[][] {{0, 1}, {0, 0}}), d.examples().get(0).response());
        // a budget that is not a multiple of n stops mid-round
        assertEquals(7, LeaveOneOut.examples(TASK, 7, 4096, 1, true).examples().size());
        // too long for the limit: left out and counted, never cut
        LeaveOneOut.Data tight = LeaveOneOut.examples(TASK, 6, 42, 1, true);   // the plain copies are 42 tokens, the rotated 46
        assertEquals(6, tight.examples().size() + tight.tooLong());
        assertEquals(3, tight.tooLong(), tight.toString());
        for (TokenizedExample e : tight.examples()) assertEquals(42, e.length());
        // one demonstration: nothing to hold out
        assertTrue(LeaveOneOut.examples(new ArcTask("one", TASK.train().subList(0, 1), TASK.test()), 8, 4096, 1, true).examples().isEmpty());
    }

    @Test
    void votingRanksByCountThenMeanLogProbability() {
        int[][] a = {{1}}, b = {{2}}, c = {{3}};
        List<Voting.Candidate> cs = List.of(new Voting.Candidate(a, -0.1), new Voting.Candidate(b, -0.5), new Voting.Candidate(b, -0.7),
                new Voting.Candidate(c, -0.2), new Voting.Candidate(c, -0.2), new Voting.Candidate(new int[][] {{1}}, -0.9));
        List<Voting.Group> g = Voting.rank(cs);
        assertEquals(3, g.size());
        assertArrayEquals(c, g.get(0).grid(), "2 votes, mean -0.2");
        assertArrayEquals(a, g.get(1).grid(), "2 votes, mean -0.5 (identical grids from different arrays group)");
        assertEquals(-0.5, g.get(1).meanLogProb(), 1e-12);
        assertArrayEquals(b, g.get(2).grid(), "2 votes, mean -0.6");
        int[][][] at = Voting.attempts(cs);
        assertArrayEquals(c, at[0]);
        assertArrayEquals(a, at[1]);
        // count beats probability
        at = Voting.attempts(List.of(new Voting.Candidate(a, -5), new Voting.Candidate(a, -5), new Voting.Candidate(b, -0.01)));
        assertArrayEquals(a, at[0]);
        assertArrayEquals(b, at[1]);
        at = Voting.attempts(List.of(new Voting.Candidate(b, -1)));
        assertArrayEquals(b, at[0]);
        assertArrayEquals(b, at[1], "one candidate: both attempts");
        at = Voting.attempts(List.of());
        assertNull(at[0]);
        assertNull(at[1]);
    }

    @Test
    void submissionAndResultsFollowArcPrizeScoring() throws Exception {
        int[][] right = {{0, 7}, {8, 0}}, wrong = {{1}};
        List<ArcResults.TaskResult> rs = List.of(
                new ArcResults.TaskResult("aa", List.of(new int[][][] {wrong, right}, new int[][][] {wrong, wrong}), List.of(true, false), 1.5, 0.5, 0.75, 0.25, 12, null),
                new ArcResults.TaskResult("bb", List.<int[][][]>of(new int[][][] {right, right}), List.of(true), 1, 1, 0.5, 0.1, 12, null),
                new ArcResults.TaskResult("cc", List.<int[][][]>of(new int[][][] {null, null}), List.of(false), 0, 0, Double.NaN, Double.NaN, 0, "test 0: no augmented prompt fits"));
        assertTrue(ArcResults.solved(new int[][][] {wrong, right}, right));
        assertTrue(!ArcResults.solved(new int[][][] {wrong, null}, right));
        assertEquals(0.5, rs.get(0).score());
        assertEquals(0.0, rs.get(2).score());
        assertEquals((0.5 + 1 + 0) / 3, ArcResults.total(rs), 1e-12);
        ArcResults.write(dir, rs);
        ObjectMapper m = new ObjectMapper();
        JsonNode sub = m.readTree(dir.resolve("submission.json").toFile());
        assertEquals(3, sub.size());
        assertEquals(2, sub.get("aa").size(), "one entry per test input");
        assertEquals("[[0,7],[8,0]]", sub.get("aa").get(0).get("attempt_2").toString());
        assertEquals("[[1]]", sub.get("aa").get(1).get("attempt_1").toString());
        assertEquals("[[0]]", sub.get("cc").get(0).get("attempt_1").toString(), "placeholder");
        JsonNode res = m.readTree(dir.resolve("results.json").toFile());
        assertEquals(0.5, res.get("score").asDouble(), 1e-12);
        assertEquals(4, res.get("tests").asInt());
        assertEquals(2, res.get("solved_tests").asInt());
        assertEquals("[true,false]", res.get("tasks").get("aa").get("solved").toString());
        assertEquals(1.5, res.get("tasks").get("aa").get("ttt_seconds").asDouble());
        assertEquals(0.25, res.get("tasks").get("aa").get("final_loss").asDouble());
        assertEquals(0.75, res.get("tasks").get("aa").get("first_loss").asDouble());
        assertTrue(res.get("tasks").get("cc").get("final_loss").isNull());
        assertTrue(res.get("tasks").get("cc").get("error").asText().contains("fits"));
        String table = ArcResults.table(rs);
        assertTrue(table.contains("aa") && table.contains("Y.") && table.contains("score 0.5000 over 3 tasks"), table);
    }

    void task(Path folder, String id) throws Exception {
        Files.createDirectories(folder);
        Files.writeString(folder.resolve(id + ".json"), "{\"train\": [{\"input\": [[1]], \"output\": [[2]]}], \"test\": [{\"input\": [[3]], \"output\": [[4]]}]}");
    }

    @Test
    void theSplitHoldsOutTheFirstIdsOfArcAgi1AndTheirArcAgi2Copies() throws Exception {
        Path one = dir.resolve("arc1"), two = dir.resolve("arc2");
        for (String id : List.of("05", "01", "03", "02", "04")) task(one, id);
        for (String id : List.of("02", "04", "09", "08")) task(two, id);
        ArcSplit s = ArcSplit.of(one, two, 2);
        assertEquals(List.of("01", "02"), ArcSplit.ids(s.validation()));
        assertEquals(List.of("03", "04", "05", "08", "09"), ArcSplit.ids(s.train()));
        assertEquals(one.resolve("04.json"), s.train().get(1), "a task in both folders is listed once, from ARC-AGI-1");
        Set<String> overlap = new HashSet<>(ArcSplit.ids(s.train()));
        overlap.retainAll(ArcSplit.ids(s.validation()));
        assertTrue(overlap.isEmpty());
        Exception e = org.junit.jupiter.api.Assertions.assertThrows(java.io.IOException.class, () -> ArcSplit.of(one, two, 5));
        assertTrue(e.getMessage().contains("5 task files"), e.getMessage());
    }

    @Test
    void thePretrainingStreamPacksWholeExamplesWithLossOnOutputsOnly() {
        PretrainStream.Example e = PretrainStream.serialize(TASK.train().subList(0, 1), TASK.test().get(0));
        ArcTokenizer tok = new ArcTokenizer();
        assertEquals("<s>I10\n00\nO01\n00\n</s>I70\n08\nO07\n80\n</s>", tok.decodeWithSpecial(e.tokens()));
        StringBuilder lossText = new StringBuilder();
        for (int i = 0; i < e.tokens().length; i++) if (e.loss()[i]) lossText.append(tok.decodeWithSpecial(new int[] {e.tokens()[i]}));
        assertEquals("01\n00\n</s>07\n80\n</s>", lossText.toString(), "loss on the output grids and their EOS");

        PretrainStream s = new PretrainStream(List.of(TASK), 64, 9, true);
        Batch b = s.nextBatch(3);
        assertEquals(3 * 64, b.tokenCount());
        for (int r = 0; r < 3; r++) {
            int pad = b.keyStart()[r], base = r * 64;
            assertTrue(pad < 64);
            for (int i = 0; i < pad; i++) assertEquals(ArcTokenizer.PAD, b.tokens()[base + i]);
            assertEquals(ArcTokenizer.BOS, b.tokens()[base + pad], "a row starts with an example's BOS");
            assertEquals(ArcTokenizer.EOS, b.tokens()[base + 63], "and ends with an example's EOS: whole examples only");
            for (int i = pad; i < 64; i++) {
                int t = b.targets()[base + i];
                if (t != Batch.IGNORE) {
                    assertEquals(b.tokens()[base + i + 1], t);
                    assertTrue(ArcTokenizer.colorOf(t) >= 0 || t == ArcTokenizer.ROW_END || t == ArcTokenizer.EOS);
                }
            }
        }
        assertTrue(s.examples() >= 3);
        PretrainStream tiny = new PretrainStream(List.of(TASK), 8, 9, true);
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> tiny.nextBatch(1), "nothing fits 8 tokens");
    }
}
