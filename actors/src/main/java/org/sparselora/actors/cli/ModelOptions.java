package org.sparselora.actors.cli;

import java.nio.file.Path;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.tokenizer.Tokenizer;
import picocli.CommandLine.Option;

/**
 * {@code --model} and {@code --tokenizer} of the commands that read a base model with its
 * tokenizer (score, eval, generate, calibrate): one declaration, so their help and their checks
 * cannot drift apart. {@link #open()} opens the pair and checks one against the other.
 */
final class ModelOptions {

    @Option(names = "--model", required = true, paramLabel = "M", description = "HF model directory or llama2.c .bin")
    Path model;

    @Option(names = "--tokenizer", paramLabel = "T", description = "tokenizer.json, llama2.c tokenizer .bin, or a directory (default: the model's)")
    Path tokenizer;

    /** The base weights and their tokenizer, whose ids must fit the model's vocabulary; close when done. */
    Opened open() {
        WeightSource src = ModelFiles.openModel(model);
        try {
            Tokenizer tok = ModelFiles.openTokenizer(model, tokenizer);
            try {
                ModelFiles.checkVocab(tok, src.config(), model, tokenizer);
                return new Opened(src, tok);
            } catch (RuntimeException e) {
                tok.close();
                throw e;
            }
        } catch (RuntimeException e) {
            src.close();
            throw e;
        }
    }

    /** What runs on the loaded model (with the adapter, or null without one). */
    @FunctionalInterface
    interface OnModel<T> {
        T run(LlamaModel model, LoraAdapter lora);
    }

    /** An opened model and tokenizer; {@link #run} puts the weights (and an adapter) on a device. */
    record Opened(WeightSource src, Tokenizer tok) implements AutoCloseable {

        /** Uploads the weights to {@code device}'s backend, adds {@code adapter} when given, runs {@code body}, frees them all. */
        <T> T run(DeviceOption device, AdapterOption adapter, OnModel<T> body) {
            var be = device.backend();
            try (be; LlamaWeights w = LlamaWeights.upload(be, src);
                 LoraAdapter lora = adapter.dir == null ? null : ModelFiles.openAdapter(be, src.config(), adapter.dir)) {
                return body.run(new LlamaModel(be, w), lora);
            }
        }

        @Override
        public void close() {
            try (src) {
                tok.close();
            }
        }
    }
}
