package org.sparselora.actors.pipeline;

import org.apache.pekko.actor.NoSerializationVerificationNeeded;

/**
 * Marker for messages that only ever travel inside one JVM (timers, replies carrying live engine
 * objects or whole trainer states, adapters around local futures). With
 * {@code pekko.actor.serialize-messages = on} Pekko checks every other message, so a message that
 * should be able to cross machines but has no serializer fails the tests.
 */
public interface LocalMessage extends NoSerializationVerificationNeeded {}
