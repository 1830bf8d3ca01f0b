package org.sparselora.actors.cli;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.SpawnProtocol;
import org.sparselora.actors.pipeline.JobSupervisor;
import org.sparselora.actors.pipeline.PredictorCache;

/**
 * Starts the actor system of a {@code train} or {@code serve} process with one of the launch
 * configurations from cluster-config/ ({@code sparselora-<launch>.conf}; launch = local unless
 * {@code -Dsparselora.launch=multinode|kubernetes}), and reads the job knobs from it.
 */
final class Launch {

    private Launch() {}

    static Config config() {
        String launch = System.getProperty("sparselora.launch", "local");
        if (!launch.matches("local|multinode|kubernetes"))
            throw new IllegalArgumentException("-Dsparselora.launch=" + launch + ": expected local, multinode or kubernetes");
        return ConfigFactory.load("sparselora-" + launch);
    }

    static ActorSystem<SpawnProtocol.Command> actorSystem(Config config) {
        return ActorSystem.create(SpawnProtocol.create(), "sparselora", config);
    }

    static JobSupervisor.Settings settings(Config c) {
        return new JobSupervisor.Settings(c.getDuration("sparselora.job.round-timeout"), c.getInt("sparselora.job.max-restarts"),
                c.getInt("sparselora.job.max-non-finite-steps"), PredictorCache.shared());
    }
}
