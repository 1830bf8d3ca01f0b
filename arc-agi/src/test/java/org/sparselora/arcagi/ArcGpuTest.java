package org.sparselora.arcagi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code arc pretrain} and {@code arc solve} on a CUDA GPU with a tiny model (the CPU test's path, device cuda). */
@Tag("gpu")
class ArcGpuTest {

    @TempDir
    Path dir;

    @Test
    void pretrainAndSolveOnTheGpu() throws Exception {
        SplittableRandom r = new SplittableRandom(5);
        Path arc1 = Files.createDirectories(dir.resolve("arc1")), tasks = Files.createDirectories(dir.resolve("tasks"));
        for (int i = 0; i < 84; i++) Files.writeString(arc1.resolve(String.format("%08x.json", i)), ArcEndToEndTest.mirrorTask(r, 1));
        Files.writeString(tasks.resolve("bbbb0001.json"), ArcEndToEndTest.mirrorTask(r, 2));
        Path model = dir.resolve("model");
        ArcEndToEndTest.Run p = ArcEndToEndTest.run("arc", "pretrain", "--arc1", arc1.toString(), "--out", model.toString(), "--preset", "tiny",
                "--steps", "4", "--seq-len", "512", "--batch-size", "2", "--device", "cuda");
        assertEquals(0, p.code(), p.err());
        Path out = dir.resolve("solve");
        ArcEndToEndTest.Run s = ArcEndToEndTest.run("arc", "solve", "--model", model.toString(), "--tasks", tasks.toString(), "--out", out.toString(),
                "--ttt-steps", "3", "--ttt-examples", "6", "--batch-size", "2", "--augmentations", "4", "--max-len", "512", "--device", "cuda");
        assertEquals(0, s.code(), s.err());
        JsonNode res = new ObjectMapper().readTree(out.resolve("results.json").toFile());
        assertEquals(2, res.get("tests").asInt());
        assertTrue(Double.isFinite(res.get("tasks").get("bbbb0001").get("final_loss").asDouble()), res.toString());
    }
}
