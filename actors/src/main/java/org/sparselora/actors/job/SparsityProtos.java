package org.sparselora.actors.job;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Path;
import java.util.Locale;
import java.util.TreeMap;
import org.sparselora.engine.sparse.SparsityConfig;
import org.sparselora.proto.control.JobSpec;

/**
 * The one mapper between the engine's {@link SparsityConfig} (which parses, defaults and validates)
 * and its protobuf mirror {@link org.sparselora.proto.control.SparsityConfig} (what job specs carry
 * over gRPC and in checkpoints). A proto config is read by turning it into the published YAML
 * schema's tree (unset fields absent) and parsing that, so a config submitted over gRPC, written
 * inline in a job file or loaded from a file meets the same defaults and the same checks. Every
 * engine error becomes a {@link JobSpecException} naming where the config came from.
 */
public final class SparsityProtos {

    private SparsityProtos() {}

    /** The proto's set fields as a tree in the published YAML schema (map keys sorted). */
    public static ObjectNode toTree(org.sparselora.proto.control.SparsityConfig c) {
        ObjectNode n = JsonNodeFactory.instance.objectNode();
        if (c.hasStartStep()) n.put("start_step", c.getStartStep());
        if (c.hasEndStep()) n.put("end_step", c.getEndStep());
        if (!c.getMode().isEmpty()) n.put("mode", c.getMode());
        if (c.hasSkipOutputTokens()) n.put("skip_output_tokens", c.getSkipOutputTokens());
        if (!c.getFrozenGrad().isEmpty()) n.put("frozen_grad", c.getFrozenGrad());
        n.put("sparse_output_tokens", c.getSparseOutputTokens());
        ObjectNode m = n.putObject("sparsity");
        new TreeMap<>(c.getSparsityMap()).forEach(m::put);
        return n;
    }

    /** The engine's config for a proto one; {@code at} names it in errors (e.g. {@code sparsity}). */
    public static SparsityConfig toEngine(org.sparselora.proto.control.SparsityConfig c, String at) {
        return parse(toTree(c), at);
    }

    /** The sparsity a job runs: its inline config, or plain LoRA when it has none. */
    public static SparsityConfig forJob(JobSpec spec) {
        return spec.hasSparsity() ? toEngine(spec.getSparsity(), "sparsity") : SparsityConfig.dense();
    }

    /** A YAML tree in the published schema (a job file's inline block) as the proto, every field set. */
    public static org.sparselora.proto.control.SparsityConfig fromTree(JsonNode tree, String at) {
        return toProto(parse(tree, at));
    }

    /** A config file in the published schema as the proto, every field set. */
    public static org.sparselora.proto.control.SparsityConfig load(Path file) {
        try {
            return toProto(SparsityConfig.load(file));
        } catch (IllegalArgumentException e) {
            throw new JobSpecException("sparsity", e.getMessage());
        }
    }

    /** Every field set, defaults included: the form a prepared job spec carries. */
    public static org.sparselora.proto.control.SparsityConfig toProto(SparsityConfig c) {
        return org.sparselora.proto.control.SparsityConfig.newBuilder()
                .setStartStep(c.startStep())
                .setEndStep(c.endStep())
                .setMode(c.mode())
                .setSkipOutputTokens(c.skipOutputTokens())
                .setFrozenGrad(c.frozenGrad().name().toLowerCase(Locale.ROOT))
                .setSparseOutputTokens(c.sparseOutputTokens())
                .putAllSparsity(c.sparsity())
                .build();
    }

    /** Defaults filled in and validated: the proto after a round trip through the engine. */
    public static org.sparselora.proto.control.SparsityConfig normalized(org.sparselora.proto.control.SparsityConfig c, String at) {
        return toProto(toEngine(c, at));
    }

    private static SparsityConfig parse(JsonNode tree, String at) {
        try {
            return SparsityConfig.parse(tree, at);
        } catch (IllegalArgumentException e) {
            String m = e.getMessage() == null ? e.toString() : e.getMessage();
            throw new JobSpecException(at, m.startsWith(at + ": ") ? m.substring(at.length() + 2) : m);
        }
    }
}
