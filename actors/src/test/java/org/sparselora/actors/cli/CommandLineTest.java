package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import org.apache.pekko.actor.typed.ActorSystem;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

/** Every command answers --help; the launch configurations in cluster-config/ load and resolve. */
class CommandLineTest {

    @Test
    void everyCommandHasHelp() {
        CommandLine cl = Main.commandLine();
        assertTrue(cl.getSubcommands().keySet().containsAll(java.util.List.of("train", "serve", "submit", "watch", "cancel", "jobs")));
        for (String cmd : cl.getSubcommands().keySet()) {
            if (cmd.equals("help")) continue;
            CliRunner.Result r = CliRunner.run(cmd, "--help");
            assertEquals(0, r.code(), cmd);
            assertTrue(r.out().startsWith("Usage: sparselora " + cmd), cmd + ": " + r.out());
        }
        CliRunner.Result none = CliRunner.run();
        assertEquals(2, none.code());
        assertTrue(none.err().contains("a command is required"), none.err());
        CliRunner.Result missing = CliRunner.run("train");
        assertEquals(2, missing.code());
        assertTrue(missing.err().contains("Missing required option: '--config=JOB.yaml'"), missing.err());
        CliRunner.Result badServer = CliRunner.run("jobs", "--server", "nowhere");
        assertEquals(2, badServer.code());
        assertTrue(badServer.err().contains("--server 'nowhere': expected HOST:PORT"), badServer.err());
    }

    @Test
    void theLaunchConfigurationsLoad() {
        for (String launch : java.util.List.of("local", "multinode", "kubernetes")) {
            Config c = ConfigFactory.load("sparselora-" + launch);
            assertEquals("PinnedDispatcher", c.getString("sparselora.stepper-dispatcher.type"), launch);
            assertEquals("org.sparselora.actors.pipeline.ClusterProtobufSerializer", c.getString("pekko.actor.serializers.sparselora-cluster"));
            assertEquals(3, c.getInt("sparselora.job.max-restarts"));
        }
        Config multi = ConfigFactory.load("sparselora-multinode");
        assertEquals("cluster", multi.getString("pekko.actor.provider"));
        assertEquals("pekko://sparselora@127.0.0.1:25520", multi.getStringList("pekko.cluster.seed-nodes").get(0));
        assertEquals("off", multi.getString("pekko.actor.allow-java-serialization"));
        Config k8s = ConfigFactory.load("sparselora-kubernetes");
        assertEquals("pekko://sparselora@sparselora-0.sparselora.default.svc.cluster.local:25520", k8s.getStringList("pekko.cluster.seed-nodes").get(0));
        // the local launch starts an actor system as train/serve do
        ActorSystem<?> sys = Launch.actorSystem(Launch.config());
        try {
            assertEquals(java.time.Duration.ofMinutes(30), Launch.settings(Launch.config()).roundTimeout());
        } finally {
            sys.terminate();
        }
    }
}
