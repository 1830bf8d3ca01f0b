package org.sparselora.actors.pipeline;

import java.util.concurrent.Executor;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.DispatcherSelector;
import org.apache.pekko.actor.typed.javadsl.AbstractBehavior;
import org.apache.pekko.actor.typed.javadsl.ActorContext;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.actor.typed.javadsl.Receive;

/**
 * The Predictor stage: gets the SVD predictor factors for the job's base model — built or loaded
 * through the injected {@link PredictorBuilder} at most once per base model per process
 * ({@link PredictorCache}) — on the blocking dispatcher, forwards build progress, and reports
 * {@link Ready} (or {@link Failed}) once. The JobSupervisor keeps dense warm-up steps running
 * meanwhile and holds the first sparse step until {@link Ready}.
 */
public final class Predictor extends AbstractBehavior<Predictor.Command> {

    public sealed interface Command permits BuildProgress, Built {}

    private record BuildProgress(String stage, double fraction, String message) implements Command, LocalMessage {}

    private record Built(PredictorFactors factors, Throwable error) implements Command, LocalMessage {}

    public sealed interface Event permits Progress, Ready, Failed {}

    public record Progress(String stage, double fraction, String message) implements Event, LocalMessage {}

    public record Ready(PredictorFactors factors) implements Event, LocalMessage {}

    public record Failed(String reason) implements Event, LocalMessage {}

    public static final String BLOCKING_DISPATCHER = "sparselora.blocking-dispatcher";

    public static Behavior<Command> create(PredictorBuilder builder, PredictorCache cache, ActorRef<Event> reportTo) {
        return Behaviors.setup(ctx -> new Predictor(ctx, builder, cache, reportTo));
    }

    private final ActorRef<Event> reportTo;

    private Predictor(ActorContext<Command> ctx, PredictorBuilder builder, PredictorCache cache, ActorRef<Event> reportTo) {
        super(ctx);
        this.reportTo = reportTo;
        Executor blocking = ctx.getSystem().dispatchers().lookup(DispatcherSelector.fromConfig(BLOCKING_DISPATCHER));
        ActorRef<Command> self = ctx.getSelf();
        boolean[] started = new boolean[1];
        var future = cache.getOrBuild(builder, (stage, fraction, msg) -> self.tell(new BuildProgress(stage, fraction, msg)),
                blocking, started);
        if (!started[0]) reportTo.tell(new Progress("predictor", 0, "waiting for the shared predictor of " + builder.cacheKey()));
        ctx.pipeToSelf(future, (f, err) -> new Built(f, err == null ? null : DataLoader.unwrap(err)));
    }

    @Override
    public Receive<Command> createReceive() {
        return newReceiveBuilder()
                .onMessage(BuildProgress.class, this::onProgress)
                .onMessage(Built.class, this::onBuilt)
                .build();
    }

    private Behavior<Command> onProgress(BuildProgress p) {
        reportTo.tell(new Progress(p.stage(), p.fraction(), p.message()));
        return this;
    }

    private Behavior<Command> onBuilt(Built b) {
        if (b.error() != null) reportTo.tell(new Failed("predictor: " + DataLoader.message(b.error())));
        else reportTo.tell(new Ready(b.factors()));
        return Behaviors.stopped();
    }
}
