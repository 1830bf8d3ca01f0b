package org.sparselora.arcagi;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.stream.Stream;

/**
 * The fixed train/validation split of the ARC-AGI training sets. Rule: the validation tasks are the
 * {@value #VALIDATION_COUNT} ARC-AGI-1 training tasks whose ids sort first (ascending, as strings),
 * together with their ARC-AGI-2 copies (the same id in the ARC-AGI-2 folder). Every other task of
 * either folder is a training task; a task present in both folders under one id is listed once (its
 * ARC-AGI-1 file). Validation tasks are never pretrained on.
 *
 * @param train      task files to pretrain on, sorted by id
 * @param validation task files held out (ARC-AGI-1 files), sorted by id
 */
public record ArcSplit(List<Path> train, List<Path> validation) {

    public static final int VALIDATION_COUNT = 80;

    /** @param arc1 the ARC-AGI-1 training folder; @param arc2 the ARC-AGI-2 training folder (may be null) */
    public static ArcSplit of(Path arc1, Path arc2) throws IOException { return of(arc1, arc2, VALIDATION_COUNT); }

    public static ArcSplit of(Path arc1, Path arc2, int validationCount) throws IOException {
        TreeMap<String, Path> one = tasks(arc1);
        if (one.size() <= validationCount)
            throw new IOException(arc1 + ": " + one.size() + " task files, the split holds out " + validationCount + " of them for validation");
        Set<String> held = new TreeSet<>(List.copyOf(one.keySet()).subList(0, validationCount));
        Map<String, Path> train = new TreeMap<>();
        List<Path> validation = new ArrayList<>();
        for (var e : one.entrySet()) {
            if (held.contains(e.getKey())) validation.add(e.getValue());
            else train.put(e.getKey(), e.getValue());
        }
        if (arc2 != null)
            for (var e : tasks(arc2).entrySet())
                if (!held.contains(e.getKey())) train.putIfAbsent(e.getKey(), e.getValue());
        return new ArcSplit(List.copyOf(train.values()), List.copyOf(validation));
    }

    /** Task files of a folder by id (file name without .json). */
    static TreeMap<String, Path> tasks(Path dir) throws IOException {
        if (!Files.isDirectory(dir)) throw new IOException(dir + ": not a directory of ARC task files");
        TreeMap<String, Path> out = new TreeMap<>();
        try (Stream<Path> s = Files.list(dir)) {
            s.filter(p -> p.getFileName().toString().endsWith(".json")).forEach(p -> out.put(p.getFileName().toString().replaceFirst("\\.json$", ""), p));
        }
        if (out.isEmpty()) throw new IOException(dir + ": no .json task files");
        return out;
    }

    /** Ids of some task files. */
    public static List<String> ids(List<Path> files) {
        List<String> out = new ArrayList<>();
        for (Path p : files) out.add(p.getFileName().toString().replaceFirst("\\.json$", ""));
        return out;
    }
}
