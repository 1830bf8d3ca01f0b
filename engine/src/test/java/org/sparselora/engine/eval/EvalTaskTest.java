package org.sparselora.engine.eval;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** Answer extraction per task: the final number of math sets, exact text, the first ARC grid. */
class EvalTaskTest {

    @Test
    void gsm8kTakesTheLastNumberWithoutCommas() {
        EvalTask t = EvalTask.GSM8K;
        assertEquals("1234.5", t.extract("First 3 apples, then 4.\nThe answer is 1,234.5."));
        assertEquals("-7", t.extract("so x = -7"));
        assertNull(t.extract("no digits here"));
        assertTrue(t.matches("18", "18"));
        assertTrue(t.matches("18.0", "18"));
        assertTrue(t.matches("1234.5", "1,234.5"));
        assertTrue(t.matches("18.0004", "18"));
        assertFalse(t.matches("18.01", "18"));
        assertFalse(t.matches(null, "18"));
        assertThrows(IllegalArgumentException.class, () -> t.matches("3", "three"));
    }

    @Test
    void exactComparesTrimmedText() {
        assertTrue(EvalTask.EXACT.matches(EvalTask.EXACT.extract("  fedcba \n"), "fedcba"));
        assertFalse(EvalTask.EXACT.matches(EvalTask.EXACT.extract("fedcb"), "fedcba"));
    }

    @Test
    void arcReadsTheFirstGrid() {
        assertArrayEquals(new int[][] {{1, 2}, {3, 4}}, EvalTask.parseGrid("here:\n12\n34\nthen text\n56"));
        assertArrayEquals(new int[][] {{1, 2}, {3, 4}}, EvalTask.parseGrid("[[1, 2], [3, 4]]"));
        assertArrayEquals(new int[][] {{0, 9, 0}}, EvalTask.parseGrid("0 9 0"));
        assertNull(EvalTask.parseGrid("123\n45"));        // ragged
        assertNull(EvalTask.parseGrid("nothing"));
        assertTrue(EvalTask.ARC.matches(EvalTask.ARC.extract("12\n34"), "[[1,2],[3,4]]"));
        assertFalse(EvalTask.ARC.matches(EvalTask.ARC.extract("12\n35"), "[[1,2],[3,4]]"));
        assertFalse(EvalTask.ARC.matches(EvalTask.ARC.extract("12\n34\n56"), "[[1,2],[3,4]]"));
    }

    @Test
    void unknownTaskNamesTheChoices() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> EvalTask.parse("bleu"));
        assertTrue(e.getMessage().contains("gsm8k, exact, arc"), e.getMessage());
    }
}
