package org.sparselora.arcagi;

import java.nio.file.Files;
import java.nio.file.Path;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.io.FormatException;
import org.sparselora.engine.io.HfCheckpoint;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.tokenizer.HfTokenizer;

/**
 * An ARC base model opened for solving: a HF checkpoint directory whose {@code tokenizer.json} is the
 * ARC grid vocabulary ({@link ArcTokenizer}, checked id by id), its weights on a backend.
 */
public final class ArcModel implements AutoCloseable {
    public final Path dir;
    public final WeightSource source;
    public final Backend backend;
    public final LlamaWeights weights;
    public final LlamaModel model;

    private ArcModel(Path dir, WeightSource source, Backend backend, LlamaWeights weights, LlamaModel model) {
        this.dir = dir;
        this.source = source;
        this.backend = backend;
        this.weights = weights;
        this.model = model;
    }

    public static ArcModel open(Path dir, String device) {
        if (!Files.isRegularFile(dir.resolve("config.json")))
            throw new FormatException(dir, "not a model directory (no config.json): --model takes a directory written by 'arc pretrain'");
        checkTokenizer(dir);
        WeightSource src = HfCheckpoint.open(dir);
        if (src.config().vocabSize() < ArcTokenizer.VOCAB) {
            src.close();
            throw new FormatException(dir, "the model's vocabulary has " + src.config().vocabSize() + " ids, the ARC tokenizer needs " + ArcTokenizer.VOCAB);
        }
        Backend be = null;
        try {
            be = backend(device);
            LlamaWeights w = LlamaWeights.upload(be, src);
            return new ArcModel(dir, src, be, w, new LlamaModel(be, w));
        } catch (RuntimeException | Error e) {
            if (be != null) be.close();
            src.close();
            throw e;
        }
    }

    /** The model directory's tokenizer must map every ARC token to the ARC id (a text tokenizer cannot solve grids). */
    static void checkTokenizer(Path dir) {
        Path file = dir.resolve("tokenizer.json");
        if (!Files.isRegularFile(file)) throw new FormatException(dir, "no tokenizer.json: an ARC model directory holds the ARC grid tokenizer");
        try (HfTokenizer tok = HfTokenizer.load(file)) {
            ArcTokenizer arc = new ArcTokenizer();
            for (int id = 0; id < ArcTokenizer.VOCAB; id++)
                if (tok.tokenId(arc.decodeToken(id)) != id)
                    throw new FormatException(file, "not the ARC grid tokenizer: token " + arc.decodeToken(id).replace("\n", "\\n")
                            + " has id " + tok.tokenId(arc.decodeToken(id)) + ", expected " + id);
        }
    }

    /** {@code cpu}, {@code cuda} (GPU 0) or {@code cuda:N}; a missing GPU is an error, never a CPU fallback. */
    public static Backend backend(String device) {
        if (device.equals("cpu")) return new CpuBackend();
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("cuda(?::([0-9]{1,2}))?").matcher(device);
        if (!m.matches()) throw new IllegalArgumentException("--device '" + device + "': expected cpu, cuda or cuda:<n>");
        int gpu = m.group(1) == null ? 0 : Integer.parseInt(m.group(1));
        try {
            return org.sparselora.cuda.GpuBackend.create(gpu);
        } catch (RuntimeException | LinkageError e) {
            String why = e.getMessage() != null ? e.getMessage().strip().lines().findFirst().orElse("") : e.toString();
            throw new IllegalArgumentException("--device " + device + ": no usable CUDA GPU (" + why + ")", e);
        }
    }

    @Override
    public void close() {
        model.close();
        weights.close();
        backend.close();
        source.close();
    }
}
