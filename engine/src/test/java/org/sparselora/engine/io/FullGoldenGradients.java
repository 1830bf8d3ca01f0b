package org.sparselora.engine.io;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import org.sparselora.engine.model.LlamaConfig;

/**
 * The full-parameter reference of a golden fixture, {@code expected_full.safetensors} (written by
 * {@code scripts/export_hf_golden.py --full}): HF autograd's gradient of the base model's loss on the
 * fixture's batch with respect to every parameter, under HF names ({@code grad.model.embed_tokens.weight},
 * {@code grad.model.layers.0.self_attn.q_proj.bias}, …; a tied head is the embedding), the loss (HF's
 * mean over the output tokens, as {@code loss_base}) and the number of output tokens, so a sum-of-losses
 * gradient compares after dividing by it. {@link #open} checks that the gradients are exactly the
 * config's parameters with their shapes; a missing file or tensor is an error naming it.
 */
public final class FullGoldenGradients implements AutoCloseable {
    public static final String FILE = "expected_full.safetensors";

    private final Safetensors file;
    private final LinkedHashMap<String, HostTensor> grads;

    private FullGoldenGradients(Safetensors file, LinkedHashMap<String, HostTensor> grads) {
        this.file = file;
        this.grads = grads;
    }

    /** Opens {@code fixtureDir/expected_full.safetensors} and checks it against the fixture model's config. */
    public static FullGoldenGradients open(Path fixtureDir, LlamaConfig config) {
        Path p = fixtureDir.resolve(FILE);
        if (!Files.isRegularFile(p))
            throw new FormatException(p, "missing: the full-parameter references are made by `python scripts/export_hf_golden.py --full <fixtures dir>`");
        Safetensors st = Safetensors.open(p);
        try {
            for (String scalar : new String[] {"loss", "output_tokens"})
                if (!st.has(scalar) || !Arrays.equals(st.get(scalar).shape(), new int[] {1}))
                    throw new FormatException(p, "needs a tensor '" + scalar + "' of shape [1]");
            LinkedHashMap<String, HostTensor> g = new LinkedHashMap<>();
            for (Map.Entry<String, int[]> e : HfCheckpoint.expectedShapes(config).entrySet()) {
                String key = GoldenFixtures.GRAD_PREFIX + e.getKey();
                if (!st.has(key)) throw new FormatException(p, "no gradient '" + key + "' for parameter " + e.getKey());
                HostTensor h = st.get(key);
                if (!Arrays.equals(h.shape(), e.getValue()))
                    throw new FormatException(p, "gradient '" + key + "' has shape " + Arrays.toString(h.shape()) + ", the parameter " + Arrays.toString(e.getValue()));
                g.put(e.getKey(), h);
            }
            for (String name : st.tensors().keySet())
                if (name.startsWith(GoldenFixtures.GRAD_PREFIX) && !g.containsKey(name.substring(GoldenFixtures.GRAD_PREFIX.length())))
                    throw new FormatException(p, "gradient '" + name + "' names no parameter of the model (a tied head has none of its own)");
            return new FullGoldenGradients(st, g);
        } catch (RuntimeException e) {
            st.close();
            throw e;
        }
    }

    /** HF's mean cross-entropy over the output tokens. */
    public float loss() { return file.get("loss").toFloats()[0]; }

    /** Tokens that carry loss (labels[:, 1:] ≠ -100). */
    public int outputTokens() { return Math.round(file.get("output_tokens").toFloats()[0]); }

    /** d loss / d parameter, by HF parameter name, in canonical order. */
    public Map<String, HostTensor> grads() { return java.util.Collections.unmodifiableMap(grads); }

    @Override
    public void close() { file.close(); }
}
