package org.sparselora.engine.train;

import org.sparselora.engine.model.Batch;

import java.util.LinkedHashMap;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.model.LlamaConfig;

/**
 * The model's side of full-parameter training: the one seam between {@link FullTrainer} (masters,
 * moments, AdamW, clipping, checkpoints) and the model's layer code (forward and backward with
 * weight gradients). The trainer never looks inside the model; the model never sees the optimizer.
 *
 * <p>Contract:
 * <ul>
 *   <li>{@link #parameters()} lists every trainable tensor the forward reads, by HF name, in the
 *       order of {@code HfCheckpoint.expectedShapes} (embedding; per layer input norm, q, k, v, their
 *       biases when the config has them, o, post-attention norm, gate, up, down; final norm; the head
 *       when untied). A tied head is the embedding and is not listed again. The tensors are the
 *       <em>compute</em> weights (the backend's compute type: F32 on the CPU, BF16 on the GPU); the
 *       same tensor objects for the model's whole life, so the trainer can refresh them in place
 *       after each update (it owns fp32 masters of those that are not F32).</li>
 *   <li>{@link #forwardBackward} runs one micro-batch and <b>adds</b> into {@code grads} the gradient
 *       of Σ cross-entropy over the batch's output tokens (targets ≠ {@link Batch#IGNORE}; a sum, not
 *       a mean, like the LoRA path) with respect to every parameter, as F32, shape of the parameter.
 *       For a tied head the embedding's gradient holds both uses (lookup rows and head). It returns
 *       that Σ loss (nats), waiting for the device once. Several calls before the trainer's update
 *       are gradient accumulation, hence "adds": the trainer zeroes the gradients after each update.</li>
 *   <li>No dropout and no other randomness: the same weights and batch give the same gradients, so a
 *       resumed run is bit-identical on the CPU.</li>
 *   <li>Optionally {@link #phases()}: the same step split into a host part and a device part, so the
 *       trainer can record the device part once per step shape (a CUDA graph) and replay it.</li>
 * </ul>
 */
public interface FullParameterModel {

    LlamaConfig config();

    Backend backend();

    /** Every trainable compute tensor by HF name, in canonical order (see the class comment). */
    LinkedHashMap<String, Tensor> parameters();

    /** Forward + backward of one micro-batch, gradient sums added into {@code grads}; returns Σ loss. */
    double forwardBackward(Batch batch, ModelGrads grads);

    /** The step in recordable phases, or null (the default) when the model only runs it whole. */
    default StepPhases phases() { return null; }

    /**
     * {@link #forwardBackward} in three phases: {@code prepare(b, g); queue(); loss()} must equal
     * {@code forwardBackward(b, g)}. Only {@link #queue()} may be recorded and replayed, so it must
     * do device work alone (no host reads or writes, no allocation the recording would not see):
     * {@link #prepare} uploads the batch into buffers the model keeps, whose addresses a replay reuses.
     */
    interface StepPhases {
        /**
         * The host part: checks and uploads the batch (inputs, targets) into model-owned buffers and
         * binds {@code grads}. Returns the step's key — equal keys prepared while
         * {@link #bufferEpoch()} stayed the same run the same device ops on the same tensors — or
         * null when this step cannot be recorded.
         */
        Object prepare(Batch batch, ModelGrads grads);

        /** The device part: forward and backward, gradients added into the bound {@code grads}; no host access. */
        void queue();

        /** Σ loss of the step just queued (waits for the device). */
        double loss();

        /** Changes whenever a buffer the device part reads or writes is made or freed: recordings of an older epoch are stale. */
        long bufferEpoch();
    }
}
