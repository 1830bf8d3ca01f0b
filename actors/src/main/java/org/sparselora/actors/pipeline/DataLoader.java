package org.sparselora.actors.pipeline;

import java.util.ArrayDeque;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.PostStop;
import org.apache.pekko.actor.typed.javadsl.AbstractBehavior;
import org.apache.pekko.actor.typed.javadsl.ActorContext;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.actor.typed.javadsl.Receive;
import org.sparselora.engine.model.Batch;

/**
 * The DataLoader stage: wraps a {@link BatchSource} and keeps up to {@code prefetch} batches read
 * ahead of the consumer, never more (back-pressure by demand: a read starts only while
 * buffered + in-flight &lt; prefetch, and every {@link Next} frees a slot). All source calls run in
 * order on one thread owned by this actor, so tokenization never blocks a dispatcher thread and the
 * source needs no locking. The data summary (malformed record count and lines) is reported once,
 * after {@link BatchSource#open()}. {@link Seek} (after a restart from a checkpoint) drops the
 * buffer; reads already started before it are recognised by their seek generation and discarded.
 */
public final class DataLoader extends AbstractBehavior<DataLoader.Command> {

    public sealed interface Command permits Next, Seek, Opened, ReadDone {}

    /** Ask for the next batch; answered with {@link Loaded} (as soon as one is buffered). */
    public record Next(ActorRef<Event> replyTo) implements Command, LocalMessage {}

    /** Continue from {@code position}; later {@link Loaded} replies carry the new {@code seekGeneration}. */
    public record Seek(DataPosition position, long seekGeneration) implements Command, LocalMessage {}

    private record Opened(DataSummary summary, Throwable error) implements Command, LocalMessage {}

    private record ReadDone(long seekGeneration, Batch batch, DataPosition after, Throwable error) implements Command, LocalMessage {}

    /** What the loader tells its consumer. */
    public sealed interface Event permits Loaded, Summary, Failed {}

    /** A batch and the source position right after it (what a checkpoint taken after this step stores). */
    public record Loaded(Batch batch, DataPosition after, long seekGeneration) implements Event, LocalMessage {}

    public record Summary(DataSummary summary) implements Event, LocalMessage {}

    public record Failed(String reason) implements Event, LocalMessage {}

    public static Behavior<Command> create(BatchSource source, int prefetch, DataPosition start, ActorRef<Event> reportTo) {
        if (prefetch < 1) throw new IllegalArgumentException("prefetch must be >= 1, got " + prefetch);
        return Behaviors.setup(ctx -> new DataLoader(ctx, source, prefetch, start, reportTo));
    }

    private final BatchSource source;
    private final int prefetch;
    private final ActorRef<Event> reportTo;
    private final ExecutorService io;
    private final ArrayDeque<Loaded> buffer = new ArrayDeque<>();
    private final ArrayDeque<ActorRef<Event>> waiting = new ArrayDeque<>();
    private long seekGeneration;
    private int inFlight;
    private boolean open;
    private boolean failed;

    private DataLoader(ActorContext<Command> ctx, BatchSource source, int prefetch, DataPosition start, ActorRef<Event> reportTo) {
        super(ctx);
        this.source = source;
        this.prefetch = prefetch;
        this.reportTo = reportTo;
        this.io = Executors.newSingleThreadExecutor(Thread.ofPlatform().name("data-loader-" + ctx.getSelf().path().name()).daemon().factory());
        ctx.pipeToSelf(CompletableFuture.supplyAsync(() -> {
            try {
                DataSummary s = source.open();
                if (start != null && !start.equals(DataPosition.START)) source.seek(start);
                return s;
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        }, io), (s, err) -> new Opened(s, unwrap(err)));
    }

    @Override
    public Receive<Command> createReceive() {
        return newReceiveBuilder()
                .onMessage(Next.class, this::onNext)
                .onMessage(Seek.class, this::onSeek)
                .onMessage(Opened.class, this::onOpened)
                .onMessage(ReadDone.class, this::onReadDone)
                .onSignal(PostStop.class, s -> onPostStop())
                .build();
    }

    private Behavior<Command> onOpened(Opened m) {
        if (m.error() != null) {
            fail("data: " + message(m.error()));
            return this;
        }
        open = true;
        reportTo.tell(new Summary(m.summary()));
        fill();
        return this;
    }

    private Behavior<Command> onNext(Next m) {
        if (failed) {
            m.replyTo().tell(new Failed("data loader stopped after an error"));
            return this;
        }
        waiting.add(m.replyTo());
        deliver();
        fill();
        return this;
    }

    private Behavior<Command> onSeek(Seek m) {
        seekGeneration = m.seekGeneration();
        buffer.clear();
        waiting.clear();
        long gen = seekGeneration;
        // runs after any read already queued on the io thread; those reads come back stale
        getContext().pipeToSelf(CompletableFuture.runAsync(() -> {
            try {
                source.seek(m.position());
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        }, io), (ok, err) -> err == null ? new ReadDone(gen, null, null, null) : new ReadDone(gen, null, null, unwrap(err)));
        inFlight++;
        return this;
    }

    private Behavior<Command> onReadDone(ReadDone m) {
        inFlight--;
        if (m.error() != null) {
            fail("data: " + message(m.error()));
            return this;
        }
        if (m.batch() != null && m.seekGeneration() == seekGeneration) buffer.add(new Loaded(m.batch(), m.after(), m.seekGeneration()));
        deliver();
        fill();
        return this;
    }

    private void deliver() {
        while (!buffer.isEmpty() && !waiting.isEmpty()) waiting.poll().tell(buffer.poll());
    }

    private void fill() {
        if (!open || failed) return;
        while (buffer.size() + inFlight < prefetch) {
            long gen = seekGeneration;
            inFlight++;
            getContext().pipeToSelf(CompletableFuture.supplyAsync(() -> {
                try {
                    Batch b = source.next();
                    return new ReadDone(gen, b, source.position(), null);
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            }, io), (r, err) -> err == null ? r : new ReadDone(gen, null, null, unwrap(err)));
        }
    }

    private void fail(String reason) {
        failed = true;
        reportTo.tell(new Failed(reason));
        for (ActorRef<Event> w : waiting) w.tell(new Failed(reason));
        waiting.clear();
    }

    private Behavior<Command> onPostStop() {
        io.shutdownNow();
        return this;
    }

    static Throwable unwrap(Throwable t) {
        while ((t instanceof java.util.concurrent.CompletionException || t instanceof RuntimeException) && t.getCause() != null
                && t.getClass() != IllegalArgumentException.class && t.getClass() != IllegalStateException.class)
            t = t.getCause();
        return t;
    }

    /** The first line of the message, at most 300 characters (some libraries put stack traces in messages). */
    static String firstLine(Throwable t) {
        // Pekko wraps a failure in an actor's setup: report what actually went wrong
        if (t instanceof org.apache.pekko.actor.ActorInitializationException && t.getCause() != null) t = t.getCause();
        String m = message(t).strip();
        int nl = m.indexOf('\n');
        if (nl >= 0) m = m.substring(0, nl).strip() + " …";
        return m.length() > 300 ? m.substring(0, 300) + " …" : m;
    }

    static String message(Throwable t) {
        return t.getMessage() != null ? t.getMessage() : t.getClass().getSimpleName();
    }
}
