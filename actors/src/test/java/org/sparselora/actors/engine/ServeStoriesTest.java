package org.sparselora.actors.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Map;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.SpawnProtocol;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.cli.CliRunner;
import org.sparselora.actors.pipeline.JobSupervisor;
import org.sparselora.actors.pipeline.PredictorCache;
import org.sparselora.actors.server.ControlServer;
import org.sparselora.actors.server.JobManager;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.generate.Generator;
import org.sparselora.engine.io.AdapterFiles;
import org.sparselora.engine.io.Llama2cCheckpoint;
import org.sparselora.engine.io.PeftAdapter;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.tokenizer.Tokenizers;

/**
 * End to end over loopback with the real engine: a server, a SparseLoRA job on stories260K
 * submitted and watched from the CLI, and the PEFT adapter it wrote loaded back onto the base
 * model for generation (the adapter changes what the model writes).
 */
@Tag("shared-data")
class ServeStoriesTest {

    @TempDir
    Path dir;

    @Test
    void submitWatchAndGenerateWithTheAdapter() throws Exception {
        Path data = Path.of(System.getProperty("sparselora.shared", "../shared")).toAbsolutePath().normalize().resolve("data");
        Path model = data.resolve("models/stories260K/stories260K.bin"), tok = data.resolve("tokenizers/llama2c-tok512/tok512.bin");
        if (!Files.isRegularFile(model)) throw new IllegalStateException(model + " is missing: pass -Dsparselora.shared=<dir holding data/>");
        Path job = dir.resolve("job.yaml");
        Files.writeString(job, """
                model: %s
                tokenizer: %s
                data: {path: %s, format: text}
                lora: {r: 8, alpha: 16, targets: [q, k, v, o, gate, up, down]}
                sparsity: {start_step: 0.25, sparsity: {layers.2.mlp: 0.5, layers.3.mlp: 0.5}}
                optimizer: {lr: 3.0e-3}
                steps: 12
                batch_size: 4
                seq_len: 48
                workers: 2
                output_dir: out
                checkpoint_every: 4
                seed: 5
                """.formatted(model, tok, data.resolve("pretrain/tinyshakespeare.jsonl")));
        Path token = dir.resolve("token");
        Files.writeString(token, "stories-token-0123456789");
        ActorSystem<SpawnProtocol.Command> system = ActorSystem.create(SpawnProtocol.create(), "serve-stories");
        try (JobManager jobs = new JobManager(system, 1, JobManager.engines(), new JobSupervisor.Settings(Duration.ofMinutes(5), 3, 3, new PredictorCache()));
             ControlServer server = ControlServer.start(new ControlServer.Options("127.0.0.1", 0, token, null, null, 1 << 20, null,
                     java.util.List.of(dir, data), false), jobs)) {
            CliRunner.Result r = CliRunner.run("submit", job.toString(), "--watch", "--server", "127.0.0.1:" + server.port(), "--token-file", token.toString());
            assertEquals(0, r.code(), r.out() + r.err());
            assertTrue(r.out().contains("finished at step 12"), r.out());
            assertTrue(r.err().contains("predictor ready"), r.err());
        } finally {
            system.terminate();
        }
        AdapterFiles a = PeftAdapter.read(dir.resolve("out/adapter"));
        try (Llama2cCheckpoint src = Llama2cCheckpoint.open(model)) {
            CpuBackend be = new CpuBackend(2);
            LlamaModel m = new LlamaModel(be, LlamaWeights.upload(be, src));
            Tokenizer t = Tokenizers.load(tok);
            var modules = new ArrayList<String>(a.spec().targetModules());
            LoraAdapter base = new LoraAdapter(be, src.config(), new LoraConfig(8, 16, 0, LoraConfig.targetsOf(modules), false, 5));
            LoraAdapter tuned = new LoraAdapter(be, src.config(), new LoraConfig(8, 16, 0, LoraConfig.targetsOf(modules), false, 5));
            tuned.fromHost(Map.copyOf(a.tensors()));
            int[] prompt = t.encode("First Citizen:", true);
            String before = t.decode(new Generator(m, base).generate(prompt, Generator.Options.greedy(40, t.eosId())));
            String after = t.decode(new Generator(m, tuned).generate(prompt, Generator.Options.greedy(40, t.eosId())));
            assertFalse(after.isBlank());
            assertTrue(!before.equals(after), "the adapter changes the generation: " + after);
        }
    }
}
