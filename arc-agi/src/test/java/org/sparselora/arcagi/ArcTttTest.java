package org.sparselora.arcagi;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Grid text, task validation and the leave-one-out TTT data (no model needed). */
class ArcTttTest {

    @TempDir
    Path dir;

    static final String TASK = """
            {"train": [{"input": [[1,0],[0,0]], "output": [[0,1],[0,0]]},
                       {"input": [[2,2],[0,3]], "output": [[2,2],[3,0]]},
                       {"input": [[5,0,0]],     "output": [[0,0,5]]}],
             "test":  [{"input": [[7,0],[0,8]], "output": [[0,7],[8,0]]}]}
            """;

    @Test
    void gridsRenderParseAndTransform() {
        int[][] g = {{1, 2, 3}, {4, 5, 6}};
        assertEquals("123\n456", Grids.render(g));
        assertArrayEquals(g, Grids.parse("123\n456"));
        assertArrayEquals(g, Grids.parse("Output:\n123\n456\n\n### trailing words"));
        assertNull(Grids.parse("12\n345"), "ragged");
        assertNull(Grids.parse("no digits here"));
        assertArrayEquals(new int[][]{{4, 1}, {5, 2}, {6, 3}}, Grids.rot90(g));
        assertArrayEquals(new int[][]{{1, 4}, {2, 5}, {3, 6}}, Grids.transpose(g));
        assertArrayEquals(g, Grids.rot90(Grids.rot90(Grids.rot90(Grids.rot90(g)))));
    }

    @Test
    void aTaskLoadsAndBadTasksNameTheField() throws Exception {
        Path f = dir.resolve("abc123.json");
        Files.writeString(f, TASK);
        ArcTask t = ArcTask.load(f);
        assertEquals("abc123", t.id());
        assertEquals(3, t.train().size());
        assertArrayEquals(new int[][]{{0, 7}, {8, 0}}, t.test().get(0).output());
        assertBad("{\"train\": [{\"input\": [[1,2],[3]], \"output\": [[1]]}], \"test\": [{\"input\": [[1]]}]}", "train[0].input[1] has 1 cells, row 0 has 2");
        assertBad("{\"train\": [{\"input\": [[1,12]], \"output\": [[1]]}], \"test\": [{\"input\": [[1]]}]}", "train[0].input[0][1] must be an integer 0-9, got 12");
        assertBad("{\"train\": [{\"input\": [[1]]}], \"test\": [{\"input\": [[1]]}]}", "train[0].output is missing");
        assertBad("{\"train\": [], \"test\": [{\"input\": [[1]]}]}", "'train' has no pairs");
        assertBad("[1, 2", "not valid JSON");
    }

    void assertBad(String json, String message) throws IOException {
        Path f = dir.resolve("bad.json");
        Files.writeString(f, json);
        IOException e = assertThrows(IOException.class, () -> ArcTask.load(f));
        assertTrue(e.getMessage().startsWith(f + ": ") && e.getMessage().contains(message), e.getMessage());
    }

    @Test
    void theTttDataIsLeaveOneOutUnderEveryTransform() throws Exception {
        Path f = dir.resolve("t.json");
        Files.writeString(f, TASK);
        ArcTask t = ArcTask.load(f);
        List<TttDataset.Record> plain = TttDataset.records(t, false), aug = TttDataset.records(t, true);
        assertEquals(3, plain.size());
        assertEquals(15, aug.size());
        TttDataset.Record r0 = plain.get(0);
        assertEquals("Input:\n10\n00", r0.input());
        assertEquals("01\n00", r0.output());
        assertTrue(!r0.instruction().contains("Input:\n10\n00") && r0.instruction().contains("Input:\n22\n03\nOutput:\n22\n30"), r0.instruction());
        // the rotated copy of pair 0 is rotated consistently: input and output alike
        TttDataset.Record rot = aug.get(3);
        assertEquals("Input:\n01\n00", rot.input());
        assertEquals(Grids.render(Grids.rot90(new int[][]{{0, 1}, {0, 0}})), rot.output());
        TttDataset.Record q = TttDataset.prompt(t, t.test().get(0).input());
        assertTrue(q.instruction().contains("Input:\n500\nOutput:\n005") && q.input().equals("Input:\n70\n08"), q.toString());
        Path out = dir.resolve("ttt.json");
        TttDataset.write(aug, out);
        var arr = new ObjectMapper().readTree(out.toFile());
        assertEquals(15, arr.size());
        assertEquals("01\n00", arr.get(0).get("output").asText());
    }
}
