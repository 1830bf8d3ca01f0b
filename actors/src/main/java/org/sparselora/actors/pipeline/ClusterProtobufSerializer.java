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
    private static final String READY = "StepperReady";
    private static final String WORKER_FAILED = "WorkerFailed";
    private static final String RESTORE = "Restore";
    private static final String SNAPSHOT = "Snapshot";
    private static final String STATE = "StateSnapshot";
    private static final String ATTACH = "AttachRemotePredictor";
    private static final String HOST = "HostStepper";
    private static final String RELEASE = "ReleaseJob";
    private static final String DESCRIBE = "DescribeNode";
    private static final String NODE = "NodeInfo";
    private static final String SCORES = "ChannelScores";
    private static final String SCORE_SUM = "ChannelScoreSum";

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
            case JobSupervisor.StepperReady m -> READY;
            case JobSupervisor.WorkerFailed m -> WORKER_FAILED;
            case Stepper.Restore m -> RESTORE;
            case Stepper.Snapshot m -> SNAPSHOT;
            case JobSupervisor.StateSnapshot m -> STATE;
            case Stepper.AttachRemotePredictor m -> ATTACH;
            case WorkerHost.HostStepper m -> HOST;
            case WorkerHost.ReleaseJob m -> RELEASE;
            case WorkerHost.DescribeNode m -> DESCRIBE;
            case WorkerHost.NodeInfo m -> NODE;
            case ScoreHub.Contribution m -> SCORES;
            case ScoreHub.Sum m -> SCORE_SUM;
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
            case JobSupervisor.StepperReady m -> org.sparselora.proto.cluster.StepperReady.newBuilder().setGeneration(m.generation()).setWorker(m.worker())
                    .setStepper(ref(m.stepper())).build().toByteArray();
            case JobSupervisor.WorkerFailed m -> org.sparselora.proto.cluster.WorkerFailed.newBuilder().setGeneration(m.generation())
                    .setWorker(m.worker()).setReason(m.reason()).build().toByteArray();
            case Stepper.Restore m -> org.sparselora.proto.cluster.Restore.newBuilder().setGeneration(m.generation()).setStep(m.step()).setState(toProto(m.state()))
                    .setReplyTo(ref(m.replyTo())).build().toByteArray();
            case Stepper.Snapshot m -> org.sparselora.proto.cluster.Snapshot.newBuilder().setGeneration(m.generation()).setReplyTo(ref(m.replyTo())).build().toByteArray();
            case JobSupervisor.StateSnapshot m -> org.sparselora.proto.cluster.StateSnapshot.newBuilder().setGeneration(m.generation()).setState(toProto(m.state()))
                    .setWorker(m.worker()).build().toByteArray();
            case Stepper.AttachRemotePredictor m -> org.sparselora.proto.cluster.AttachRemotePredictor.newBuilder().setFingerprint(m.fingerprint()).build().toByteArray();
            case WorkerHost.HostStepper m -> {
                org.sparselora.proto.cluster.HostStepper.Builder b = org.sparselora.proto.cluster.HostStepper.newBuilder().setJobId(m.jobId()).setJobSpec(m.spec().toByteString())
                        .setWorker(m.worker()).setWorkers(m.workers()).setSlot(m.slot()).setGeneration(m.generation())
                        .setHasState(m.state() != null).setStartStep(m.startStep()).setPredictorFingerprint(m.predictorFingerprint())
                        .setSupervisor(ref(m.supervisor())).setScoreHub(ref(m.scoreHub()));
                if (m.state() != null) b.setState(toProto(m.state()));
                yield b.build().toByteArray();
            }
            case WorkerHost.ReleaseJob m -> org.sparselora.proto.cluster.ReleaseJob.newBuilder().setJobId(m.jobId()).build().toByteArray();
            case WorkerHost.DescribeNode m -> org.sparselora.proto.cluster.DescribeNode.newBuilder().setReplyTo(ref(m.replyTo())).build().toByteArray();
            case WorkerHost.NodeInfo m -> org.sparselora.proto.cluster.NodeInfo.newBuilder().setAddress(m.address()).setRole(m.role()).setPid(m.pid())
                    .addAllDevices(m.devices()).build().toByteArray();
            case ScoreHub.Contribution m -> {
                org.sparselora.proto.cluster.ChannelScores.Builder b = org.sparselora.proto.cluster.ChannelScores.newBuilder().setGeneration(m.generation()).setStep(m.step()).setLayer(m.layer())
                        .setWhat(m.what()).setWorker(m.worker()).setAbstain(m.abstain());
                if (m.scores() != null) b.setScores(CheckpointStore.toProto(m.scores()));
                if (m.replyTo() != null) b.setReplyTo(ref(m.replyTo()));
                yield b.build().toByteArray();
            }
            case ScoreHub.Sum m -> org.sparselora.proto.cluster.ChannelScoreSum.newBuilder().setGeneration(m.generation()).setStep(m.step()).setLayer(m.layer())
                    .setWhat(m.what()).setSum(CheckpointStore.toProto(m.sum())).build().toByteArray();
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
                case READY -> {
                    var p = org.sparselora.proto.cluster.StepperReady.parseFrom(bytes);
                    yield new JobSupervisor.StepperReady(p.getGeneration(), p.getWorker(), resolver.resolveActorRef(p.getStepper()));
                }
                case WORKER_FAILED -> {
                    var p = org.sparselora.proto.cluster.WorkerFailed.parseFrom(bytes);
                    yield new JobSupervisor.WorkerFailed(p.getGeneration(), p.getWorker(), p.getReason());
                }
                case RESTORE -> {
                    var p = org.sparselora.proto.cluster.Restore.parseFrom(bytes);
                    yield new Stepper.Restore(p.getGeneration(), p.getStep(), fromProto(p.getState()), resolver.resolveActorRef(p.getReplyTo()));
                }
                case SNAPSHOT -> {
                    var p = org.sparselora.proto.cluster.Snapshot.parseFrom(bytes);
                    yield new Stepper.Snapshot(p.getGeneration(), resolver.resolveActorRef(p.getReplyTo()));
                }
                case STATE -> {
                    var p = org.sparselora.proto.cluster.StateSnapshot.parseFrom(bytes);
                    yield new JobSupervisor.StateSnapshot(p.getGeneration(), fromProto(p.getState()), p.getWorker());
                }
                case ATTACH -> new Stepper.AttachRemotePredictor(org.sparselora.proto.cluster.AttachRemotePredictor.parseFrom(bytes).getFingerprint());
                case HOST -> {
                    var p = org.sparselora.proto.cluster.HostStepper.parseFrom(bytes);
                    yield new WorkerHost.HostStepper(p.getJobId(), org.sparselora.proto.control.JobSpec.parseFrom(p.getJobSpec()), p.getWorker(),
                            p.getWorkers(), p.getSlot(), p.getGeneration(), p.getHasState() ? fromProto(p.getState()) : null, p.getStartStep(),
                            p.getPredictorFingerprint(), resolver.resolveActorRef(p.getSupervisor()), resolver.resolveActorRef(p.getScoreHub()));
                }
                case RELEASE -> new WorkerHost.ReleaseJob(org.sparselora.proto.cluster.ReleaseJob.parseFrom(bytes).getJobId());
                case DESCRIBE -> new WorkerHost.DescribeNode(resolver.resolveActorRef(org.sparselora.proto.cluster.DescribeNode.parseFrom(bytes).getReplyTo()));
                case NODE -> {
                    var p = org.sparselora.proto.cluster.NodeInfo.parseFrom(bytes);
                    yield new WorkerHost.NodeInfo(p.getAddress(), p.getRole(), p.getPid(), java.util.List.copyOf(p.getDevicesList()));
                }
                case SCORES -> {
                    var p = org.sparselora.proto.cluster.ChannelScores.parseFrom(bytes);
                    yield new ScoreHub.Contribution(p.getGeneration(), p.getStep(), p.getLayer(), p.getWhat(), p.getWorker(), p.getAbstain(),
                            p.hasScores() ? CheckpointStore.toArray(p.getScores()) : null,
                            p.getReplyTo().isEmpty() ? null : resolver.resolveActorRef(p.getReplyTo()));
                }
                case SCORE_SUM -> {
                    var p = org.sparselora.proto.cluster.ChannelScoreSum.parseFrom(bytes);
                    yield new ScoreHub.Sum(p.getGeneration(), p.getStep(), p.getLayer(), p.getWhat(), CheckpointStore.toArray(p.getSum()));
                }
                default -> throw new NotSerializableException("unknown cluster message manifest '" + manifest + "'");
            };
        } catch (InvalidProtocolBufferException e) {
            throw new NotSerializableException("malformed " + manifest + ": " + e.getMessage());
        }
    }

    private String ref(ActorRef<?> r) { return resolver.toSerializationFormat(r); }

    static org.sparselora.proto.cluster.TrainerStateProto toProto(org.sparselora.engine.train.TrainerState s) {
        org.sparselora.proto.cluster.TrainerStateProto.Builder b = org.sparselora.proto.cluster.TrainerStateProto.newBuilder().setStep(s.step());
        s.tensors().forEach((k, v) -> b.addTensors(org.sparselora.proto.cluster.NamedTensor.newBuilder().setName(k).setData(CheckpointStore.toProto(v))));
        return b.build();
    }

    static org.sparselora.engine.train.TrainerState fromProto(org.sparselora.proto.cluster.TrainerStateProto p) {
        java.util.LinkedHashMap<String, float[]> t = new java.util.LinkedHashMap<>();
        for (var n : p.getTensorsList()) t.put(n.getName(), CheckpointStore.toArray(n.getData()));
        return new org.sparselora.engine.train.TrainerState(p.getStep(), t);
    }

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
