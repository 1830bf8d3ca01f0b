package org.sparselora.actors.job;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.sparse.DenseWarmup;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.SparsityConfig;

/** job.yaml → JobSpec: keys, defaults, relative paths, sparsity by path, and errors naming the key. */
class JobFilesTest {

    @TempDir
    Path dir;

    Path write(String name, String yaml) throws Exception {
        Path f = dir.resolve(name);
        Files.writeString(f, yaml);
        return f;
    }

    static final String FULL = """
            name: math10k
            model: models/llama
            tokenizer: models/llama/tokenizer.json
            data: {path: data/math10k.json, format: alpaca}
            lora: {r: 16, alpha: 32, dropout: 0.05, targets: [q_proj, k, v, o, gate, up, down], rslora: true}
            sparsity: configs/llama3-8b-math10k.yaml
            optimizer: {name: adamw, lr: 3.0e-4, weight_decay: 0.01, beta1: 0.9, beta2: 0.95, eps: 1.0e-6, grad_clip: 0}
            schedule: {type: cosine, warmup_steps: 10, min_lr_ratio: 0.1}
            steps: 100
            batch_size: 8
            seq_len: 512
            workers: 2
            output_dir: runs/math
            checkpoint_every: 25
            seed: 42
            device: cuda:0
            """;

    @Test
    void aFullJobFileMapsToTheSpecWithPathsResolvedAgainstItsDirectory() throws Exception {
        JobSpec s = JobFiles.load(write("job.yaml", FULL));
        assertEquals("math10k", s.getName());
        assertEquals(dir.resolve("models/llama").toString(), s.getModel());
        assertEquals(dir.resolve("data/math10k.json").toString(), s.getData().getPath());
        assertEquals("alpaca", s.getData().getFormat());
        assertEquals(16, s.getLora().getR());
        assertEquals(List.of("q", "k", "v", "o", "gate", "up", "down"), s.getLora().getTargetsList());
        assertTrue(s.getLora().getRslora());
        assertEquals(dir.resolve("configs/llama3-8b-math10k.yaml").toString(), s.getSparsityPath());
        assertEquals(0.95, s.getOptimizer().getBeta2());
        assertEquals(0, s.getOptimizer().getGradClip());
        assertEquals("cosine", s.getSchedule().getType());
        assertEquals(2, s.getWorkers());
        assertEquals(25, s.getCheckpointEvery());
        assertEquals("cuda:0", s.getDevice());
        // YAML → spec → YAML → spec is the identity
        Path again = write("again.yaml", JobFiles.toYaml(s));
        assertEquals(s, JobFiles.load(again));
    }

    @Test
    void aMinimalJobFileGetsTheDefaults() throws Exception {
        JobSpec s = JobFiles.load(write("min.yaml", "model: toy:bigram\ndata: toy:markov\nsteps: 10\nbatch_size: 2\nseq_len: 16\noutput_dir: out\n"));
        assertEquals("toy:bigram", s.getModel(), "a value with a scheme is not a path");
        assertEquals(1, s.getWorkers());
        assertEquals(32, s.getLora().getR());
        assertEquals(64, s.getLora().getAlpha());
        assertEquals(List.of("q", "k", "v", "o"), s.getLora().getTargetsList());
        assertEquals("adamw", s.getOptimizer().getName());
        assertEquals(2e-4, s.getOptimizer().getLr());
        assertEquals(100, s.getCheckpointEvery());
        assertEquals("cpu", s.getDevice());
        assertEquals("out", s.getName());
        assertFalse(s.hasSparsity() || s.hasSparsityPath());
    }

    @Test
    void thePublishedSparsityConfigsLoadUnchangedAndScheduleAsSpecified() throws Exception {
        StringBuilder y = new StringBuilder("start_step: 0.05\nend_step: 1.0\nmode: svd_8\nskip_output_tokens: true\nsparsity:\n");
        for (int l = 3; l <= 30; l++) y.append("  layers.").append(l).append(".mlp: 0.99\n");
        for (int l : new int[]{14, 15, 16, 17, 18, 19, 21, 22, 23, 25, 26, 27, 28, 29}) y.append("  layers.").append(l).append(".self_attn: 0.75\n");
        Path cfg = write("llama3-8b-math10k.yaml", y.toString());
        Path job = write("job.yaml", "model: m\ndata: d.json\nsteps: 100\nbatch_size: 8\nseq_len: 512\noutput_dir: o\nsparsity: llama3-8b-math10k.yaml\n");
        JobSpec s = JobSpecs.prepare(JobFiles.load(job));
        SparsityConfig c = s.getSparsity();
        assertEquals(28 + 14, c.getSparsityCount());
        assertEquals(0.99, c.getSparsityOrThrow("layers.3.mlp"));
        assertEquals("sliced", c.getFrozenGrad());
        DenseWarmup sched = DenseWarmup.of(SparsityProtos.toEngine(c, "sparsity"), 100);
        assertFalse(sched.sparseAt(4));
        assertTrue(sched.sparseAt(5), "start_step 0.05 of 100 steps: step 5 (0-based) is the first sparse one");
        assertTrue(sched.sparseAt(99));
        SparsityConfig dense = SparsityProtos.normalized(SparsityConfig.newBuilder().setMode("dense").putSparsity("layers.3.mlp", 0.5).build(), "sparsity");
        assertFalse(DenseWarmup.of(SparsityProtos.toEngine(dense, "sparsity"), 100).anySparse());
        SparsityConfig window = SparsityProtos.normalized(SparsityConfig.newBuilder().setStartStep(0.1).setEndStep(0.5).putSparsity("layers.1.mlp", 0.9).build(), "sparsity");
        DenseWarmup w = DenseWarmup.of(SparsityProtos.toEngine(window, "sparsity"), 10);
        assertEquals(List.of(false, true, true, true, true, false), List.of(w.sparseAt(0), w.sparseAt(1), w.sparseAt(2), w.sparseAt(3), w.sparseAt(4), w.sparseAt(5)));
    }

    @Test
    void errorsNameTheFileAndTheKey() throws Exception {
        String base = "model: m\ndata: d\nsteps: 10\nbatch_size: 4\nseq_len: 8\noutput_dir: o\n";
        assertError(base + "lora: {rnk: 4}\n", "key 'lora.rnk': unknown key");
        assertError(base + "stepz: 3\n", "key 'stepz': unknown key");
        assertError(base.replace("steps: 10", "steps: ten"), "key 'steps': must be an integer, got 'ten'");
        assertError(base + "lora: {r: 0}\n", "key 'lora.r': must be in [1, 4096], got 0");
        assertError(base + "optimizer: {lr: -1}\n", "key 'optimizer.lr': must be in (0, 1], got -1.0");
        assertError(base + "workers: 3\n", "key 'workers': 3 workers cannot split batch_size 4 evenly");
        assertError(base + "sparsity: {start_step: 2, sparsity: {layers.1.mlp: 0.5}}\n", "key 'sparsity': start_step = 2.0 is outside [0, 1]");
        assertError(base + "sparsity: {sparsity: {layers.x.mlp: 0.5}}\n", "key 'sparsity': sparsity.layers.x.mlp: unknown module name (expected a suffix 'layers.<i>.mlp' or 'layers.<i>.self_attn')");
        assertError(base + "sparsity: {sparsity: {layers.1.mlp: 1.5}}\n", "key 'sparsity': sparsity.layers.1.mlp = 1.5 is outside [0, 1)");
        assertError(base + "lora: {targets: [q, q]}\n", "key 'lora.targets': 'q' listed twice");
        assertError(base.replace("model: m\n", ""), "key 'model': is required");
        assertError("- just\n- a list\n", "key '(top level)': must be a mapping");
        var io = assertThrows(java.io.IOException.class, () -> JobFiles.load(write("bad2.yaml", "model: [unclosed\n")));
        assertTrue(io.getMessage().contains("bad2.yaml: not valid YAML"), io.getMessage());
    }

    void assertError(String yaml, String expected) throws Exception {
        Path f = write("e.yaml", yaml);
        JobSpecException e = assertThrows(JobSpecException.class, () -> JobFiles.load(f));
        assertTrue(e.getMessage().startsWith(f + ": " + expected), e.getMessage());
    }
}
