package org.sparselora.actors.job;

import java.util.Arrays;
import java.util.regex.Pattern;

/**
 * The one parser of a device string, as a job file's {@code device:} and the commands'
 * {@code --device} give it, and the placement of a job's workers on it:
 * <ul>
 *   <li>{@code cpu} — every worker on the CPU backend;</li>
 *   <li>{@code cuda} — worker w on GPU w (the same as {@code cuda:0});</li>
 *   <li>{@code cuda:N} — worker w on GPU N + w (one GPU per worker);</li>
 *   <li>{@code cuda:N0,N1,…} — worker w on GPU N<sub>w</sub>, one ordinal per worker; an ordinal may
 *       repeat, so {@code cuda:0,0} puts two workers on one GPU (each with its own backend, stream and
 *       copy of the base weights, sharing the device's primary context).</li>
 * </ul>
 * Parsing never touches the GPU; whether the named GPUs exist is checked where a backend is made.
 */
public final class Devices {

    private static final Pattern SYNTAX = Pattern.compile("cpu|cuda|cuda:[0-9]{1,2}(,[0-9]{1,2})*");

    /** A parsed device string. {@code ordinals} is null for cpu; a single ordinal is the first of consecutive GPUs. */
    public record Device(String text, int[] ordinals) {
        public boolean gpu() { return ordinals != null; }

        /** Whether the string lists one GPU per worker ({@code cuda:a,b,…}) rather than a first GPU. */
        public boolean explicit() { return ordinals != null && ordinals.length > 1; }

        /** The GPU ordinal worker {@code worker} of {@code workers} runs on (GPU jobs only). */
        public int gpuOf(int worker, int workers) {
            if (ordinals == null) throw new IllegalStateException("device " + text + " is not a GPU");
            if (worker < 0 || worker >= workers) throw new IllegalArgumentException("worker " + worker + " of " + workers);
            if (explicit()) {
                if (ordinals.length != workers)
                    throw new IllegalArgumentException("device " + text + " lists " + ordinals.length + " GPUs for " + workers + " workers");
                return ordinals[worker];
            }
            return ordinals[0] + worker;
        }

        /** The distinct GPU ordinals a job of {@code workers} workers uses, ascending. */
        public int[] gpusUsed(int workers) {
            int[] g = new int[workers];
            for (int w = 0; w < workers; w++) g[w] = gpuOf(w, workers);
            return Arrays.stream(g).distinct().sorted().toArray();
        }
    }

    private Devices() {}

    /** Parses {@code s}; a malformed string is an IllegalArgumentException that quotes it. */
    public static Device parse(String s) {
        if (s == null || !SYNTAX.matcher(s).matches())
            throw new IllegalArgumentException("must be cpu, cuda, cuda:<n> or cuda:<n>,<n>,… (one GPU per worker), got '" + s + "'");
        if (s.equals("cpu")) return new Device(s, null);
        if (s.equals("cuda")) return new Device(s, new int[] {0});
        String[] parts = s.substring(5).split(",");
        int[] o = new int[parts.length];
        for (int i = 0; i < parts.length; i++) o[i] = Integer.parseInt(parts[i]);
        return new Device(s, o);
    }

    /** Validates a job's device against its worker count (the message names the problem, not the field). */
    public static Device forJob(String s, int workers) {
        Device d = parse(s);
        if (d.explicit() && d.ordinals().length != workers)
            throw new IllegalArgumentException("lists " + d.ordinals().length + " GPUs but the job has " + workers + " worker"
                    + (workers == 1 ? "" : "s") + " (give one GPU ordinal per worker, e.g. cuda:0,0 for two workers on GPU 0), got '" + s + "'");
        return d;
    }
}
