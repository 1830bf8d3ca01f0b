package org.sparselora.actors.pipeline;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Set;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.pekko.actor.Address;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.actor.typed.receptionist.Receptionist;
import org.apache.pekko.cluster.MemberStatus;

/**
 * Where a job's Steppers run, chosen once per process: {@link #LOCAL} (children of the
 * JobSupervisor, in this JVM: {@code train}, {@code serve}) or {@link Cluster} (on the worker nodes
 * of a Pekko cluster, each offering its {@link WorkerHost} through the Receptionist).
 */
public sealed interface StepperPlacement {

    StepperPlacement LOCAL = new Local();

    record Local() implements StepperPlacement {}

    /**
     * The worker nodes this coordinator sees: the Receptionist's listing of {@link WorkerHost#KEY},
     * kept up to date by a subscriber actor, minus nodes that are no longer Up and reachable.
     */
    final class Cluster implements StepperPlacement {
        private final ActorSystem<?> system;
        private final AtomicReference<Set<ActorRef<WorkerHost.Command>>> listing = new AtomicReference<>(Set.of());

        private Cluster(ActorSystem<?> system) { this.system = system; }

        /** Subscribes to the Receptionist on {@code system} (spawning the subscriber as a system actor). */
        public static Cluster start(ActorSystem<?> system) {
            Cluster c = new Cluster(system);
            Behavior<Receptionist.Listing> sub = Behaviors.setup(ctx -> {
                ctx.getSystem().receptionist().tell(Receptionist.subscribe(WorkerHost.KEY, ctx.getSelf()));
                return Behaviors.receiveMessage(l -> {
                    c.listing.set(l.getServiceInstances(WorkerHost.KEY));
                    return Behaviors.same();
                });
            });
            system.systemActorOf(sub, "sparselora-worker-listing", org.apache.pekko.actor.typed.Props.empty());
            return c;
        }

        /** The live worker nodes' hosts, in a fixed order (by address), so placement is reproducible. */
        public List<ActorRef<WorkerHost.Command>> hosts() {
            List<ActorRef<WorkerHost.Command>> l = new ArrayList<>();
            for (ActorRef<WorkerHost.Command> h : listing.get()) if (alive(h.path().address())) l.add(h);
            l.sort(Comparator.comparing(h -> h.path().address().toString()));
            return l;
        }

        /** A node is usable while it is an Up member that no other node finds unreachable. */
        public boolean alive(Address a) {
            if (!a.hasGlobalScope()) return true;   // this JVM
            var state = org.apache.pekko.cluster.typed.Cluster.get(system).state();
            for (org.apache.pekko.cluster.Member m : state.getUnreachable()) if (m.address().equals(a)) return false;
            for (org.apache.pekko.cluster.Member m : state.getMembers())
                if (m.address().equals(a)) return m.status() == MemberStatus.up();
            return false;
        }
    }
}
