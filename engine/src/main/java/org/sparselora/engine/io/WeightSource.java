package org.sparselora.engine.io;

import java.util.Set;
import org.sparselora.engine.model.LlamaConfig;

/**
 * Frozen base weights by their HF names ({@code model.embed_tokens.weight},
 * {@code model.layers.{i}.self_attn.q_proj.weight}, {@code model.norm.weight}, {@code lm_head.weight},
 * …) with the config they belong to. HF safetensors checkpoints and llama2.c {@code .bin} files
 * (whose q/k rows are permuted into HF's rotate-half layout on load) both present this view.
 */
public interface WeightSource extends AutoCloseable {

    LlamaConfig config();

    Set<String> names();

    /** The tensor, or an {@link IllegalArgumentException} naming the file and the missing key. */
    HostTensor get(String name);

    default boolean has(String name) { return names().contains(name); }

    @Override
    default void close() {}
}
