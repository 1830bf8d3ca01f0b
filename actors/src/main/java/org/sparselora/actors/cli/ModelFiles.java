package org.sparselora.actors.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import org.sparselora.actors.job.Devices;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.io.FormatException;
import org.sparselora.engine.io.HfCheckpoint;
import org.sparselora.engine.io.Llama2cCheckpoint;
import org.sparselora.engine.io.PeftAdapter;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.tokenizer.Tokenizers;

/**
 * Opening what the engine-side commands (score, generate, predictor build, calibrate) take from
 * the command line: the base model (a HF directory with config.json, or a llama2.c {@code .bin}),
 * its tokenizer (the model directory's, or {@code --tokenizer}; for a {@code .bin} a sibling
 * {@code tokenizer.bin}, as the training pipeline resolves it), a PEFT adapter directory, and the
 * backend named by {@code --device cpu|cuda[:N]}. Every user error is one exception whose message
 * names the file and the problem; Main prints it as {@code sparselora <cmd>: …}.
 */
final class ModelFiles {

    private ModelFiles() {}

    /** The base weights: a HF checkpoint directory or a llama2.c {@code .bin}. */
    static WeightSource openModel(Path model) {
        if (!Files.exists(model)) throw new FormatException(model, "no such file or directory (--model takes a HF model directory or a llama2.c .bin)");
        if (Files.isDirectory(model)) {
            if (!Files.isRegularFile(model.resolve("config.json")))
                throw new FormatException(model, "no config.json in this directory (--model takes a HF model directory or a llama2.c .bin)");
            return HfCheckpoint.open(model);
        }
        if (!model.getFileName().toString().endsWith(".bin"))
            throw new FormatException(model, "not a model (--model takes a HF model directory or a llama2.c .bin)");
        return Llama2cCheckpoint.open(model);
    }

    /** {@code --tokenizer}, else the model directory's tokenizer.json, else tokenizer.bin beside a .bin. */
    static Tokenizer openTokenizer(Path model, Path tokenizer) {
        if (tokenizer != null) return Tokenizers.load(tokenizer);
        if (Files.isDirectory(model)) return Tokenizers.load(model);
        Path sibling = model.resolveSibling("tokenizer.bin");
        if (!Files.isRegularFile(sibling))
            throw new FormatException(model, "a llama2.c checkpoint needs --tokenizer (no tokenizer.bin beside it)");
        return Tokenizers.load(sibling);
    }

    /** The tokenizer must cover the model's vocabulary ids it can produce (a mismatched pair is a user error). */
    static void checkVocab(Tokenizer tok, LlamaConfig config, Path model, Path tokenizer) {
        if (tok.vocabSize() > config.vocabSize())
            throw new FormatException(tokenizer != null ? tokenizer : model, "tokenizer has " + tok.vocabSize()
                    + " ids but the model's vocabulary is " + config.vocabSize() + " (wrong tokenizer for this model?)");
    }

    /** A PEFT adapter directory as a LoRA adapter on {@code be} (dropout off: scoring and generation only). */
    static LoraAdapter openAdapter(Backend be, LlamaConfig config, Path dir) {
        if (!Files.isDirectory(dir)) throw new FormatException(dir, "no such directory (--adapter takes a PEFT adapter directory)");
        return LoraAdapter.fromPeft(be, config, PeftAdapter.read(dir), dir);
    }

    /**
     * {@code cpu}, {@code cuda} (GPU 0) or {@code cuda:N}, as a job file's {@code device:} says (a list
     * of GPUs is for a job's workers; these commands run on one). A GPU that is not there is an error
     * with the driver's reason, never a fallback to the CPU.
     */
    static Backend backend(String device) {
        Devices.Device d;
        try {
            d = Devices.parse(device);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--device '" + device + "': expected cpu, cuda or cuda:<n>");
        }
        if (!d.gpu()) return new CpuBackend();
        if (d.explicit()) throw new IllegalArgumentException("--device '" + device + "': this command runs on one device; expected cpu, cuda or cuda:<n>");
        int gpu = d.ordinals()[0];
        try {
            return org.sparselora.cuda.GpuBackend.create(gpu);
        } catch (RuntimeException | LinkageError e) {
            // JCuda's load failure carries both native stack traces in its message: the first line says it
            String why = e.getMessage() != null ? e.getMessage().strip().lines().findFirst().orElse("") : e.toString();
            throw new IllegalArgumentException("--device " + device + ": " + (why.contains("CUDA") ? why : "no usable CUDA GPU (" + why + ")"), e);
        }
    }
}
