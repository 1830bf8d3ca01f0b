package org.sparselora.actors.job;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.SparsityConfig;

/** The proto sparsity config meets the engine's defaults and checks, through the one mapper. */
class SparsityProtosTest {

    @TempDir
    Path dir;

    /** The repository's configs/sparsity directory, found by walking up from the working directory. */
    static Path configDir() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            Path c = p.resolve("configs/sparsity");
            if (Files.isDirectory(c)) return c;
        }
        throw new AssertionError("configs/sparsity not found above " + Path.of("").toAbsolutePath());
    }

    @Test
    void unsetProtoFieldsTakeTheEngineDefaults() {
        var c = SparsityProtos.toEngine(SparsityConfig.newBuilder().putSparsity("layers.2.mlp", 0.9).build(), "sparsity");
        assertEquals(org.sparselora.engine.sparse.SparsityConfig.DEFAULT_START_STEP, c.startStep());
        assertEquals(1.0, c.endStep());
        assertEquals(8, c.rank());
        assertTrue(c.skipOutputTokens());
        assertEquals(SparsePlan.FrozenGrad.SLICED, c.frozenGrad());
        SparsityConfig full = SparsityProtos.toProto(c);
        assertEquals("svd_8", full.getMode());
        assertEquals("sliced", full.getFrozenGrad());
        assertTrue(full.hasStartStep() && full.hasEndStep() && full.hasSkipOutputTokens());
    }

    @Test
    void aConfigRoundTripsThroughTheProto() {
        var c = org.sparselora.engine.sparse.SparsityConfig.parse("""
                start_step: 0.2
                end_step: 0.8
                mode: svd_4
                skip_output_tokens: false
                sparse_output_tokens: 0.5
                frozen_grad: cut
                sparsity:
                  layers.1.mlp: 0.9
                  model.layers.3.self_attn: 0.25
                """, "c.yaml");
        var back = SparsityProtos.toEngine(SparsityProtos.toProto(c), "sparsity");
        assertEquals(c.startStep(), back.startStep());
        assertEquals(c.endStep(), back.endStep());
        assertEquals(c.rank(), back.rank());
        assertEquals(c.skipOutputTokens(), back.skipOutputTokens());
        assertEquals(c.sparseOutputTokens(), back.sparseOutputTokens());
        assertEquals(c.frozenGrad(), back.frozenGrad());
        assertEquals(c.sparsity(), back.sparsity());
        assertEquals(SparsityProtos.toProto(c), SparsityProtos.normalized(SparsityProtos.toProto(c), "sparsity"));
    }

    @Test
    void aBadProtoConfigIsAJobSpecErrorFromTheEnginesChecks() {
        JobSpecException e = assertThrows(JobSpecException.class, () -> SparsityProtos.toEngine(
                SparsityConfig.newBuilder().setMode("svd_x").build(), "sparsity"));
        assertEquals("sparsity", e.field());
        assertEquals("sparsity: mode = 'svd_x' is not 'dense' or 'svd_<rank>'", e.getMessage());
        e = assertThrows(JobSpecException.class, () -> SparsityProtos.toEngine(
                SparsityConfig.newBuilder().setStartStep(0.5).setEndStep(0.25).build(), "sparsity"));
        assertTrue(e.getMessage().contains("end_step = 0.25 is before start_step = 0.5"), e.getMessage());
        // a SubmitJob request is checked the same way
        JobSpec bad = JobSpec.newBuilder().setModel("m").setData(org.sparselora.proto.control.DataSpec.newBuilder().setPath("d"))
                .setSteps(10).setBatchSize(1).setSeqLen(8).setOutputDir("o")
                .setSparsity(SparsityConfig.newBuilder().setFrozenGrad("none")).build();
        e = assertThrows(JobSpecException.class, () -> JobSpecs.prepare(bad));
        assertTrue(e.getMessage().contains("frozen_grad = 'none'"), e.getMessage());
    }

    /** The reference's own file, summaries and ratio-0 layers included, as a job's sparsity (it used to be refused). */
    @Test
    void aJobRunsTheReferencesFileAsShipped() throws Exception {
        Path job = dir.resolve("job.yaml");
        Files.writeString(job, "model: m\ndata: d.json\nsteps: 100\nbatch_size: 8\nseq_len: 512\noutput_dir: o\nsparsity: "
                + configDir().resolve("llama3-8b-math10k.yaml") + "\n");
        JobSpec s = JobSpecs.prepare(JobFiles.load(job));
        assertEquals(64, s.getSparsity().getSparsityCount());
        assertEquals(0.99, s.getSparsity().getSparsityOrThrow("layers.3.mlp"));
        assertEquals(0, s.getSparsity().getSparsityOrThrow("layers.0.mlp"));
        var engine = SparsityProtos.forJob(s);
        assertEquals(28, engine.sparsity().entrySet().stream().filter(x -> x.getKey().endsWith("mlp") && x.getValue() > 0).count());
        // inline in a job file, the same keys are accepted and checked
        Files.writeString(job, "model: m\ndata: d.json\nsteps: 10\nbatch_size: 8\nseq_len: 512\noutput_dir: o\n"
                + "sparsity: {ffn_sparsity: ffn=0.9x2, sparsity: {layers.1.mlp: 0.9}}\n");
        JobSpecException e = assertThrows(JobSpecException.class, () -> JobFiles.load(job));
        assertTrue(e.getMessage().contains("key 'sparsity': ffn_sparsity = 'ffn=0.9x2' does not match"), e.getMessage());
        assertFalse(SparsityProtos.forJob(JobSpec.getDefaultInstance()).anySparseLayer());
    }
}
