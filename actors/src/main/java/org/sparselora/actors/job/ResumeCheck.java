package org.sparselora.actors.job;

import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.Message;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import org.sparselora.proto.control.JobSpec;

/**
 * Whether a job may continue a checkpoint: the checkpoint records the job spec it was trained
 * under, and every setting that shapes training (model, data, LoRA shape and targets, optimizer,
 * schedule, batch and sequence sizes, workers, sparsity, seed) must be the same now, or the
 * resumed run would silently train a different job from the middle of this one. A difference is
 * refused with every differing key named, both values; {@link #CHANGEABLE} keys may differ when the
 * caller allows them by name ({@code train --resume --allow-changes steps}), and {@link #FREE} keys
 * (bookkeeping that shapes nothing) always may.
 */
public final class ResumeCheck {

    /** Keys that do not shape the trained adapter. */
    public static final Set<String> FREE = Set.of("name", "checkpoint_every", "prefetch", "resume", "sparsity_path");
    /** Keys that shape the run but may be changed on purpose: more steps, another device. */
    public static final Set<String> CHANGEABLE = Set.of("steps", "epochs", "device");

    private ResumeCheck() {}

    /** Throws naming every differing key not in {@link #FREE} or {@code allowed}. */
    public static void check(JobSpec checkpointed, JobSpec now, Set<String> allowed) {
        for (String k : allowed)
            if (!CHANGEABLE.contains(k))
                throw new JobSpecException("--allow-changes", "'" + k + "' cannot be changed on resume (only " + String.join(", ", CHANGEABLE.stream().sorted().toList()) + ")");
        Map<String, String> a = flatten(checkpointed), b = flatten(now);
        List<String> diffs = new ArrayList<>();
        TreeMap<String, Boolean> keys = new TreeMap<>();
        a.keySet().forEach(k -> keys.put(k, true));
        b.keySet().forEach(k -> keys.put(k, true));
        for (String k : keys.keySet()) {
            String top = k.contains(".") ? k.substring(0, k.indexOf('.')) : k;
            if (FREE.contains(top) || allowed.contains(k) || allowed.contains(top)) continue;
            String x = a.getOrDefault(k, "(unset)"), y = b.getOrDefault(k, "(unset)");
            if (!x.equals(y)) diffs.add(k + " (checkpoint " + x + ", job " + y + ")");
        }
        if (!diffs.isEmpty())
            throw new JobSpecException("resume", "the job differs from the checkpoint it would continue in " + String.join("; ", diffs)
                    + ": resuming would train a different job from the middle of this one. Restore the settings, or start a new run in another output_dir"
                    + (diffs.stream().allMatch(d -> CHANGEABLE.contains(d.substring(0, d.indexOf(' '))))
                    ? " (or allow the change: --allow-changes " + String.join(",", diffs.stream().map(d -> d.substring(0, d.indexOf(' '))).toList()) + ")" : ""));
    }

    /** Every field as {@code a.b.c → value}, including unset scalars (their defaults). */
    static Map<String, String> flatten(Message m) {
        Map<String, String> out = new TreeMap<>();
        flatten("", m, out);
        return out;
    }

    private static void flatten(String prefix, Message m, Map<String, String> out) {
        for (FieldDescriptor f : m.getDescriptorForType().getFields()) {
            String key = prefix + f.getName();
            if (f.isMapField()) {
                for (Object e : (List<?>) m.getField(f)) {
                    Message entry = (Message) e;
                    var kd = entry.getDescriptorForType().findFieldByName("key");
                    var vd = entry.getDescriptorForType().findFieldByName("value");
                    out.put(key + "." + entry.getField(kd), String.valueOf(entry.getField(vd)));
                }
            } else if (f.isRepeated()) {
                out.put(key, String.valueOf(m.getField(f)));
            } else if (f.getJavaType() == FieldDescriptor.JavaType.MESSAGE) {
                if (m.hasField(f)) flatten(key + ".", (Message) m.getField(f), out);
            } else if (!f.hasPresence() || m.hasField(f)) {
                out.put(key, String.valueOf(m.getField(f)));
            }
        }
    }
}
