package org.sparselora.engine.io;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.io.JsonEOFException;
import java.util.Locale;

/**
 * What is wrong with a piece of JSON, in words that never repeat the input. Jackson's own messages
 * quote the offending token ("Unrecognized token 'root:x:0:0'…"), which turns any error about a
 * file into a way to read its first bytes; the descriptions here name only the kind of problem and
 * where it is.
 */
public final class JsonErrors {

    private JsonErrors() {}

    /** E.g. "invalid JSON at line 3, column 7: unrecognized token". */
    public static String describe(JsonProcessingException e) {
        String what = kind(e);
        var loc = e.getLocation();
        String where = loc == null || loc.getLineNr() < 1 ? ""
                : String.format(Locale.ROOT, " at line %d, column %d", loc.getLineNr(), loc.getColumnNr());
        return "invalid JSON" + where + ": " + what;
    }

    /** The kind of problem only, e.g. "trailing content after the value". */
    public static String kind(JsonProcessingException e) {
        if (e instanceof JsonEOFException) return "unexpected end of input";
        String m = e.getOriginalMessage() == null ? "" : e.getOriginalMessage().toLowerCase(Locale.ROOT);
        if (m.startsWith("trailing token")) return "trailing content after the value";
        if (m.startsWith("unexpected end-of-input")) return "unexpected end of input";
        if (m.startsWith("duplicate field")) return "a key appears twice";
        if (m.startsWith("unrecognized token")) return "unrecognized token";
        if (m.startsWith("unexpected character")) return "unexpected character";
        if (m.startsWith("illegal unquoted character") || m.startsWith("illegal character")) return "illegal character in a string";
        if (m.startsWith("invalid utf-8") || m.contains("utf-8")) return "not valid UTF-8";
        if (m.contains("numeric value") || m.contains("number")) return "malformed or out-of-range number";
        if (m.contains("nesting depth")) return "nested too deeply";
        return "malformed";
    }
}
