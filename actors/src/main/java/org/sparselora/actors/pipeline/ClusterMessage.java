package org.sparselora.actors.pipeline;

/**
 * Marker for messages that will cross machines when Steppers run on other nodes (step barriers,
 * gradient shards, reduced gradients, acknowledgements). Bound to {@link ClusterProtobufSerializer}
 * in reference.conf; the wire form is sparselora/cluster/v1 in {@code cluster.proto}.
 */
public interface ClusterMessage {}
