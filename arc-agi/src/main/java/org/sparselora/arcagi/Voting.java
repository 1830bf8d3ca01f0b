package org.sparselora.arcagi;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Picks two attempts from K augmented generations: each candidate grid is already mapped back to
 * the task's own frame; identical grids form one group; groups rank by how many augmentations
 * produced them, then by their members' mean log-probability (the model's average per-token
 * log-likelihood of the grid), then by first appearance. The top two groups are attempt 1 and 2.
 */
public final class Voting {

    private Voting() {}

    /** One generation, inverted to the original frame. @param logProb mean log-probability per output token */
    public record Candidate(int[][] grid, double logProb) {}

    /** A distinct grid with its votes. */
    public record Group(int[][] grid, int votes, double meanLogProb) {}

    /** Groups in rank order (best first). */
    public static List<Group> rank(List<Candidate> candidates) {
        Map<String, List<Candidate>> byGrid = new LinkedHashMap<>();
        for (Candidate c : candidates) byGrid.computeIfAbsent(Arrays.deepToString(c.grid()), k -> new ArrayList<>()).add(c);
        List<Group> groups = new ArrayList<>();
        for (List<Candidate> g : byGrid.values()) {
            double sum = 0;
            for (Candidate c : g) sum += c.logProb();
            groups.add(new Group(g.get(0).grid(), g.size(), sum / g.size()));
        }
        // a stable sort: equal count and log-prob keep first-appearance order
        groups.sort(Comparator.comparingInt(Group::votes).reversed().thenComparing(Comparator.comparingDouble(Group::meanLogProb).reversed()));
        return groups;
    }

    /**
     * Attempt 1 and 2: the two best groups; with one group, both are its grid; with none, both are
     * null (the submission writes a placeholder).
     */
    public static int[][][] attempts(List<Candidate> candidates) {
        List<Group> g = rank(candidates);
        if (g.isEmpty()) return new int[][][] {null, null};
        return new int[][][] {g.get(0).grid(), g.size() > 1 ? g.get(1).grid() : g.get(0).grid()};
    }
}
