package org.sparselora.actors.pipeline;

import com.typesafe.config.Config;

/** Test fixtures of this package for tests elsewhere. */
public final class JobsAccess {
    private JobsAccess() {}

    public static Config serializeAll() { return Jobs.serializeAll(); }
}
