package org.sparselora.arcagi;

import org.sparselora.actors.cli.CliExtension;

/** Adds {@code arc} to the {@code sparselora} command line. */
public final class ArcCliExtension implements CliExtension {
    @Override
    public String name() { return "arc"; }

    @Override
    public Object command() { return new ArcCommand(); }
}
