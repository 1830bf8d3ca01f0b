package org.sparselora.actors.pipeline;

import com.google.protobuf.InvalidProtocolBufferException;
import java.io.NotSerializableException;
import org.apache.pekko.actor.ExtendedActorSystem;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorRefResolver;
import org.apache.pekko.actor.typed.javadsl.Adapter;
import org.apache.pekko.serialization.SerializerWithStringManifest;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.StepResult;
import org.sparselora.proto.cluster.BatchProto;
import org.sparselora.proto.cluster.FloatTensor;
import org.sparselora.proto.cluster.GradientShard;
import org.sparselora.proto.cluster.ReducedGradients;
import org.sparselora.proto.cluster.RunStep;
import org.sparselora.proto.cluster.StepApplied;
import org.sparselora.proto.cluster.StepStats;

/**
 * Pekko serializer for every {@link ClusterMessage}: maps the pipeline's records to their
 * protobuf wire form in {@code cluster.proto} (actor references as serialized paths, resolved on
 * the receiving side), so the same messages work unchanged when Steppers move to other nodes.
 * Registered in reference.conf; the tests run with {@code serialize-messages = on}.
 */
public final class ClusterProtobufSerializer extends SerializerWithStringManifest {

    private static final String RUN_STEP = "RunStep";
    private static final String SHARD = "GradientShard";
    private static final String REDUCED = "ReducedGradients";
    private static final String APPLIED = "StepApplied";
    private static final String TIMED_OUT = "RoundTimedOut";

    private final ActorRefResolver resolver;

    public ClusterProtobufSerializer(ExtendedActorSystem system) {
        this.resolver = ActorRefResolver.get(Adapter.toTyped(system));
    }

    @Override
    public int identifier() { return 5_712_001; }

    @Override
    public String manifest(Object o) {
        return switch (o) {
            case Stepper.RunStep m -> RUN_STEP;
            case GradientAggregator.Contribute m -> SHARD;
            case Stepper.Reduced m -> REDUCED;
            case JobSupervisor.StepApplied m -> APPLIED;
            case JobSupervisor.RoundTimedOut m -> TIMED_OUT;
            default -> throw new IllegalArgumentException("no protobuf mapping for " + o.getClass().getName());
        };
    }

    @Override
    public byte[] toBinary(Object o) {
        return switch (o) {
            case Stepper.RunStep m -> RunStep.newBuilder().setGeneration(m.generation()).setStep(m.step())
                    .setBatch(toProto(m.batch())).setAggregator(ref(m.aggregator())).setReplyTo(ref(m.replyTo())).build().toByteArray();
            case GradientAggregator.Contribute m -> {
                GradientShard.Builder b = GradientShard.newBuilder().setGeneration(m.generation()).setStep(m.step())
                        .setWorker(m.worker()).setHasGrads(m.grads() != null).setStats(toProto(m.stats())).setStepper(ref(m.stepper()));
                if (m.grads() != null) for (float[] g : m.grads()) b.addGrads(CheckpointStore.toProto(g));
                yield b.build().toByteArray();
            }
            case Stepper.Reduced m -> {
                ReducedGradients.Builder b = ReducedGradients.newBuilder().setGeneration(m.generation()).setStep(m.step())
                        .setHasGrads(m.grads() != null).setTotalOutputTokens(m.totalOutputTokens()).setSkip(m.skip());
                if (m.grads() != null) for (float[] g : m.grads()) b.addGrads(CheckpointStore.toProto(g));
                yield b.build().toByteArray();
            }
            case JobSupervisor.StepApplied m -> StepApplied.newBuilder().setGeneration(m.generation()).setStep(m.step())
                    .setWorker(m.worker()).setLr(m.lr()).setStats(toProto(m.stats())).setSkipped(m.skipped())
                    .setBackwardEndNanos(m.times().backwardEnd()).setContributedNanos(m.times().contributed())
                    .setSumReadyNanos(m.times().sumReady()).build().toByteArray();
            case JobSupervisor.RoundTimedOut m -> org.sparselora.proto.cluster.RoundTimedOut.newBuilder().setGeneration(m.generation())
                    .setStep(m.step()).addAllMissingWorkers(m.missingWorkers()).build().toByteArray();
            default -> throw new IllegalArgumentException("no protobuf mapping for " + o.getClass().getName());
        };
    }

    @Override
    public Object fromBinary(byte[] bytes, String manifest) throws NotSerializableException {
        try {
            return switch (manifest) {
                case RUN_STEP -> {
                    RunStep p = RunStep.parseFrom(bytes);
                    yield new Stepper.RunStep(p.getGeneration(), p.getStep(), fromProto(p.getBatch()),
                            resolver.resolveActorRef(p.getAggregator()), resolver.resolveActorRef(p.getReplyTo()));
                }
                case SHARD -> {
                    GradientShard p = GradientShard.parseFrom(bytes);
                    yield new GradientAggregator.Contribute(p.getGeneration(), p.getStep(), p.getWorker(),
                            p.getHasGrads() ? grads(p.getGradsList()) : null, fromProto(p.getStats()), resolver.resolveActorRef(p.getStepper()));
                }
                case REDUCED -> {
                    ReducedGradients p = ReducedGradients.parseFrom(bytes);
                    yield new Stepper.Reduced(p.getGeneration(), p.getStep(), p.getHasGrads() ? grads(p.getGradsList()) : null,
                            p.getTotalOutputTokens(), p.getSkip());
                }
                case APPLIED -> {
                    StepApplied p = StepApplied.parseFrom(bytes);
                    yield new JobSupervisor.StepApplied(p.getGeneration(), p.getStep(), p.getWorker(), p.getLr(), fromProto(p.getStats()), p.getSkipped(),
                            new JobSupervisor.AggTimes(p.getBackwardEndNanos(), p.getContributedNanos(), p.getSumReadyNanos()));
                }
                case TIMED_OUT -> {
                    var p = org.sparselora.proto.cluster.RoundTimedOut.parseFrom(bytes);
                    yield new JobSupervisor.RoundTimedOut(p.getGeneration(), p.getStep(), java.util.List.copyOf(p.getMissingWorkersList()));
                }
                default -> throw new NotSerializableException("unknown cluster message manifest '" + manifest + "'");
            };
        } catch (InvalidProtocolBufferException e) {
            throw new NotSerializableException("malformed " + manifest + ": " + e.getMessage());
        }
    }

    private String ref(ActorRef<?> r) { return resolver.toSerializationFormat(r); }

    static BatchProto toProto(Batch b) {
        BatchProto.Builder p = BatchProto.newBuilder().setBatch(b.batch()).setSeqLen(b.seqLen());
        for (int v : b.tokens()) p.addTokens(v);
        for (int v : b.targets()) p.addTargets(v);
        for (int v : b.positions()) p.addPositions(v);
        for (int v : b.keyStart()) p.addKeyStart(v);
        return p.build();
    }

    static Batch fromProto(BatchProto p) {
        return new Batch(p.getBatch(), p.getSeqLen(), ints(p.getTokensList()), ints(p.getTargetsList()),
                ints(p.getPositionsList()), ints(p.getKeyStartList()));
    }

    static StepStats toProto(StepResult r) {
        return StepStats.newBuilder().setLossSum(r.lossSum()).setOutputTokens(r.outputTokens()).setTokens(r.tokens())
                .setSparse(r.sparse()).setFlops(r.flops()).setDenseFlops(r.denseFlops()).setPredictorFlops(r.predictorFlops())
                .setMillis(r.millis()).build();
    }

    static StepResult fromProto(StepStats s) {
        return new StepResult(s.getLossSum(), (int) s.getOutputTokens(), (int) s.getTokens(), s.getSparse(), s.getFlops(),
                s.getDenseFlops(), s.getPredictorFlops(), s.getMillis());
    }

    private static int[] ints(java.util.List<Integer> l) {
        int[] a = new int[l.size()];
        for (int i = 0; i < a.length; i++) a[i] = l.get(i);
        return a;
    }

    private static float[][] grads(java.util.List<FloatTensor> l) {
        float[][] g = new float[l.size()][];
        for (int i = 0; i < g.length; i++) g[i] = CheckpointStore.toArray(l.get(i));
        return g;
    }
}
