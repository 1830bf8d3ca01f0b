package org.sparselora.actors.job;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.proto.control.JobSpec;

/** {@code mode: full} in job files and specs: the default, what full mode refuses, and its optimizer keys. */
class JobModeTest {

    @TempDir
    Path dir;

    static final String BASE = "model: toy:bigram\ndata: {path: d.jsonl, format: text}\nsteps: 10\nbatch_size: 2\nseq_len: 16\noutput_dir: out\n";

    JobSpec load(String yaml) throws Exception {
        Path f = dir.resolve("job.yaml");
        Files.writeString(f, yaml);
        return JobFiles.load(f);
    }

    String error(String yaml) {
        JobSpecException e = assertThrows(JobSpecException.class, () -> load(yaml));
        return e.getMessage();
    }

    @Test
    void loraIsTheDefaultMode() throws Exception {
        JobSpec s = load(BASE);
        assertEquals("lora", s.getMode());
        assertFalse(JobSpecs.isFull(s.getMode()));
        assertEquals(32, s.getLora().getR(), "LoRA defaults as before");
        assertFalse(s.getOptimizer().hasDecayNormsAndEmbeddings());
    }

    @Test
    void fullModeHasNoAdapterAndDecaysMatricesOnlyByDefault() throws Exception {
        JobSpec s = load(BASE + "mode: full\noptimizer: {weight_decay: 0.1}\n");
        assertTrue(JobSpecs.isFull(s.getMode()));
        assertFalse(s.hasLora(), "no LoRA defaults are filled in full mode");
        assertEquals(0.1, s.getOptimizer().getWeightDecay());
        assertFalse(s.getOptimizer().getDecayNormsAndEmbeddings());
        JobSpec all = load(BASE + "mode: full\noptimizer: {weight_decay: 0.1, decay_norms_and_embeddings: true}\n");
        assertTrue(all.getOptimizer().getDecayNormsAndEmbeddings());
        // YAML → spec → YAML → spec is the identity in full mode too
        Path again = dir.resolve("again.yaml");
        Files.writeString(again, JobFiles.toYaml(all));
        assertEquals(all, JobFiles.load(again));
    }

    @Test
    void fullModeRefusesLoraAndSparsityNamingTheKey() {
        String lora = error(BASE + "mode: full\nlora: {r: 8}\n");
        assertTrue(lora.contains("'lora'") && lora.contains("mode: full"), lora);
        String sparsity = error(BASE + "mode: full\nsparsity: {mode: svd_8, sparsity: {layers.0.mlp: 0.5}}\n");
        assertTrue(sparsity.contains("'sparsity'") && sparsity.contains("mode: full"), sparsity);
        String byPath = error(BASE + "mode: full\nsparsity: s.yaml\n");
        assertTrue(byPath.contains("'sparsity'"), byPath);
    }

    @Test
    void badModeAndMisplacedKeysAreErrors() {
        String m = error(BASE + "mode: qlora\n");
        assertTrue(m.contains("'mode'") && m.contains("lora or full") && m.contains("qlora"), m);
        String d = error(BASE + "optimizer: {decay_norms_and_embeddings: true}\n");
        assertTrue(d.contains("optimizer.decay_norms_and_embeddings") && d.contains("mode: full"), d);
        String t = error(BASE + "mode: full\noptimizer: {decay_norms_and_embeddings: maybe}\n");
        assertTrue(t.contains("optimizer.decay_norms_and_embeddings"), t);
    }

    @Test
    void submittedSpecsGoThroughTheSameRules() {
        JobSpec full = JobSpec.newBuilder().setModel("toy:bigram").setMode("full").setSteps(5).setBatchSize(1).setSeqLen(8)
                .setOutputDir("o").setData(org.sparselora.proto.control.DataSpec.newBuilder().setPath("d.jsonl")).build();
        JobSpec ok = JobSpecs.prepare(full);
        assertEquals("full", ok.getMode());
        JobSpecException e = assertThrows(JobSpecException.class,
                () -> JobSpecs.prepare(full.toBuilder().setLora(org.sparselora.proto.control.LoraSpec.newBuilder().setR(4)).build()));
        assertEquals("lora", e.field());
    }
}
