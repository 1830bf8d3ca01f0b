package org.sparselora.actors.server;

/**
 * Who a control call comes from: the name of the token it carried and whether that token has the
 * admin role. A client sees, watches and cancels its own jobs only; an admin sees every job.
 * {@link #LOCAL} is the in-process user of a {@link JobManager} ({@code train}, or a server run
 * with {@code --insecure-local}, where every local user is the same client).
 */
public record Caller(String name, boolean admin) {

    public static final Caller LOCAL = new Caller("local", true);

    /** Whether this caller may see a job owned by {@code owner}. */
    public boolean mayAccess(String owner) { return admin || name.equals(owner); }
}
