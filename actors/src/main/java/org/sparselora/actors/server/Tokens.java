package org.sparselora.actors.server;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * The server's token file: one client per line, {@code NAME ROLE TOKEN} (role {@code user} or
 * {@code admin}), blank lines and {@code #} comments ignored. A file holding one bare token (the
 * older single-token form) is one admin client named {@code default}. Names and tokens must be
 * unique, tokens at least {@value #MIN_TOKEN} characters. Errors name the file and the line, never
 * a token.
 */
public final class Tokens {

    public static final int MIN_TOKEN = 16;
    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9._@-]{1,64}");

    private record Entry(Caller caller, byte[] token) {}

    private final List<Entry> entries;

    private Tokens(List<Entry> entries) {
        this.entries = List.copyOf(entries);
    }

    public static Tokens read(Path file) throws IOException {
        if (!Files.isReadable(file)) throw new IllegalArgumentException("--token-file " + file + ": cannot read it");
        List<String> lines = Files.readAllLines(file, StandardCharsets.UTF_8);
        List<Entry> out = new ArrayList<>();
        Set<String> names = new HashSet<>(), tokens = new HashSet<>();
        List<String> content = lines.stream().map(String::strip).filter(l -> !l.isEmpty() && !l.startsWith("#")).toList();
        if (content.size() == 1 && content.get(0).split("\\s+").length == 1) {
            String t = content.get(0);
            checkToken(file, 1, t);
            return new Tokens(List.of(new Entry(new Caller("default", true), t.getBytes(StandardCharsets.UTF_8))));
        }
        for (int i = 0; i < lines.size(); i++) {
            String l = lines.get(i).strip();
            if (l.isEmpty() || l.startsWith("#")) continue;
            String[] f = l.split("\\s+");
            int no = i + 1;
            if (f.length != 3) throw bad(file, no, "expected NAME ROLE TOKEN (3 fields), got " + f.length + " field(s)");
            if (!NAME.matcher(f[0]).matches()) throw bad(file, no, "client name must be 1-64 of A-Z a-z 0-9 . _ @ -");
            if (!f[1].equals("user") && !f[1].equals("admin")) throw bad(file, no, "role must be user or admin, got '" + f[1] + "'");
            checkToken(file, no, f[2]);
            if (!names.add(f[0])) throw bad(file, no, "client '" + f[0] + "' is listed twice");
            if (!tokens.add(f[2])) throw bad(file, no, "this token is also given to another client");
            out.add(new Entry(new Caller(f[0], f[1].equals("admin")), f[2].getBytes(StandardCharsets.UTF_8)));
        }
        if (out.isEmpty()) throw new IllegalArgumentException("--token-file " + file + ": the file names no client");
        return new Tokens(out);
    }

    private static void checkToken(Path file, int line, String t) {
        if (t.length() < MIN_TOKEN) throw bad(file, line, "token is shorter than " + MIN_TOKEN + " characters");
    }

    private static IllegalArgumentException bad(Path file, int line, String why) {
        return new IllegalArgumentException("--token-file " + file + " line " + line + ": " + why);
    }

    /** The client holding {@code token}, or null. Every entry is compared, in time independent of where a match is. */
    public Caller lookup(byte[] token) {
        Caller found = null;
        for (Entry e : entries) if (MessageDigest.isEqual(e.token(), token) && found == null) found = e.caller();
        return found;
    }

    public int size() { return entries.size(); }

    /** The token a client sends, from a client-side token file: the bare token, or the TOKEN of a one-line NAME ROLE TOKEN file. */
    public static String clientToken(Path file) throws IOException {
        if (!Files.isReadable(file)) throw new IllegalArgumentException("--token-file " + file + ": cannot read it");
        List<String> content = Files.readAllLines(file, StandardCharsets.UTF_8).stream().map(String::strip)
                .filter(l -> !l.isEmpty() && !l.startsWith("#")).toList();
        if (content.size() != 1) throw new IllegalArgumentException("--token-file " + file + ": expected one token (one line), found " + content.size() + " lines");
        String[] f = content.get(0).split("\\s+");
        if (f.length == 1) return f[0];
        if (f.length == 3) return f[2];
        throw new IllegalArgumentException("--token-file " + file + ": expected a token, or NAME ROLE TOKEN");
    }
}
