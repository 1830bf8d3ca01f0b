package org.sparselora.actors.cli;

import java.io.PrintStream;
import java.util.Locale;
import me.tongfei.progressbar.ConsoleProgressBarConsumer;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;
import org.sparselora.proto.control.JobEvent;
import org.sparselora.proto.control.JobState;

/**
 * Renders a job's events for a person: a progress bar (step/total, ETA) whose message shows loss,
 * tokens/s, sparse or dense, and the learning rate; state changes, checkpoints, restarts and the
 * data report as lines. Used by {@code train} (in-process) and {@code watch} (over gRPC).
 */
final class ProgressView implements AutoCloseable {

    private final PrintStream out;
    private final String label;
    private ProgressBar bar;
    private JobState finalState;
    private String finalReason = "";
    private double lastLoss = Double.NaN;
    private int lastStep;

    ProgressView(PrintStream out, String label) {
        this.out = out;
        this.label = label;
    }

    synchronized void on(JobEvent e) {
        switch (e.getKindCase()) {
            case STEP -> {
                var s = e.getStep();
                if (bar == null) bar = new ProgressBarBuilder().setTaskName(label).setInitialMax(s.getTotalSteps())
                        .setStyle(ProgressBarStyle.ASCII).setUpdateIntervalMillis(500)
                        .setConsumer(new ConsoleProgressBarConsumer(out, 110)).build();
                bar.stepTo(s.getStep());
                double tps = s.getMs() > 0 ? s.getTokens() / (s.getMs() / 1000) : 0;
                bar.setExtraMessage(String.format(Locale.ROOT, "loss %.4f | %,.0f tok/s | %s | lr %.2e", s.getLoss(), tps,
                        s.getSparse() ? "sparse" : "dense", s.getLr()));
                lastLoss = s.getLoss();
                lastStep = s.getStep();
            }
            case STATE -> {
                JobState st = e.getState().getState();
                if (st == JobState.FINISHED || st == JobState.FAILED || st == JobState.CANCELLED) {
                    finalState = st;
                    finalReason = e.getState().getReason();
                } else {
                    String name = st.name().toLowerCase(Locale.ROOT).replace('_', ' '), why = e.getState().getReason();
                    line(name + (why.isEmpty() || why.equals(name) ? "" : ": " + why));
                }
            }
            case CHECKPOINT -> { /* frequent; the final line names the checkpoint */ }
            case RESTARTED -> line("restarted from step " + e.getRestarted().getFromStep() + " (attempt " + e.getRestarted().getAttempt()
                    + "): " + e.getRestarted().getCause());
            case PROGRESS -> line(e.getProgress().getFraction() < 0 ? e.getProgress().getStage() + " " + e.getProgress().getMessage()
                    : String.format(Locale.ROOT, "%s %3.0f%% %s", e.getProgress().getStage(), 100 * e.getProgress().getFraction(), e.getProgress().getMessage()));
            case DATA -> {
                var d = e.getData();
                line(d.getRecords() + " records" + (d.getMalformed() == 0 ? "" : ", " + d.getMalformed() + " malformed (skipped): "
                        + String.join("; ", d.getMalformedLinesList().subList(0, Math.min(5, d.getMalformedLinesCount())))
                        + (d.getMalformedLinesCount() > 5 ? "; …" : "")));
            }
            default -> { }
        }
    }

    private void line(String s) {
        if (bar != null) out.print('\r');
        out.println("[" + label + "] " + s);
    }

    JobState finalState() { return finalState; }

    String summary() {
        return (finalState == null ? "stopped" : finalState.name().toLowerCase(Locale.ROOT)) + " at step " + lastStep
                + (Double.isNaN(lastLoss) ? "" : String.format(Locale.ROOT, ", loss %.4f", lastLoss))
                + (finalReason.isEmpty() ? "" : " — " + finalReason);
    }

    @Override
    public synchronized void close() {
        if (bar != null) bar.close();
        bar = null;
    }
}
