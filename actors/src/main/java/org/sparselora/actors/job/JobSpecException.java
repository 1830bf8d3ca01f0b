package org.sparselora.actors.job;

/** A job spec/file value that is wrong; {@link #field()} is the YAML key / proto field path
 *  (e.g. {@code lora.r}), and the message names it and the offending value. */
public final class JobSpecException extends IllegalArgumentException {

    private final String field;

    public JobSpecException(String field, String problem) {
        super(field + ": " + problem);
        this.field = field;
    }

    public String field() { return field; }
}
