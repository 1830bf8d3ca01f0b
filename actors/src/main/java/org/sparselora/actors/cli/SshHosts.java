package org.sparselora.actors.cli;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

/**
 * The hosts file of {@code launch --hosts}: one worker node per line, {@code HOST [DEVICES]}
 * (DEVICES: comma-separated cpu | cuda | cuda:<n>; default cpu), {@code #} comments; and the ssh
 * command that starts {@code sparselora node --role worker} on each.
 */
final class SshHosts {

    private SshHosts() {}

    record Host(String host, String devices) {}

    static List<Host> read(Path file) throws IOException {
        if (!Files.isRegularFile(file)) throw new IllegalArgumentException("--hosts " + file + ": no such file");
        List<Host> out = new ArrayList<>();
        List<String> lines = Files.readAllLines(file);
        for (int i = 0; i < lines.size(); i++) {
            String l = lines.get(i).replaceAll("#.*", "").strip();
            if (l.isEmpty()) continue;
            String[] f = l.split("\\s+");
            if (f.length > 2 || !f[0].matches("[A-Za-z0-9_.@-]+"))
                throw new IllegalArgumentException(file + ":" + (i + 1) + ": expected 'HOST [DEVICES]', got '" + l + "'");
            String dev = f.length == 2 ? f[1] : "cpu";
            for (String d : dev.split(","))
                if (!d.matches("cpu|cuda(:\\d+)?"))
                    throw new IllegalArgumentException(file + ":" + (i + 1) + ": device '" + d + "': expected cpu, cuda or cuda:<n>");
            out.add(new Host(f[0], dev));
        }
        if (out.isEmpty()) throw new IllegalArgumentException("--hosts " + file + ": no hosts listed");
        return out;
    }

    /** ssh -tt HOST 'cd DIR && SPARSELORA_*=… ./sparselora node --role worker …' (the address: the host's name, user@ removed). */
    static List<String> command(Host h, String dir, String seed, Duration stable) {
        String addr = h.host().contains("@") ? h.host().substring(h.host().indexOf('@') + 1) : h.host();
        String remote = "cd " + quote(dir) + " && SPARSELORA_ROLE=worker SPARSELORA_HOST=" + quote(addr) + " SPARSELORA_PORT=25520"
                + " SPARSELORA_SEED_1=" + quote(seed) + " SPARSELORA_JAVA_OPTS=-Dsparselora.launch=multinode"
                + " ./sparselora node --role worker --devices " + quote(h.devices()) + " --stable-after " + stable.toMillis() + "ms";
        return List.of("ssh", "-tt", "-o", "BatchMode=yes", h.host(), remote);
    }

    static String quote(String s) {
        return s.matches("[A-Za-z0-9_./:,=@-]+") ? s : "'" + s.replace("'", "'\\''") + "'";
    }

    static String shellJoin(List<String> cmd) {
        StringBuilder b = new StringBuilder();
        for (String c : cmd) b.append(b.isEmpty() ? "" : " ").append(quote(c));
        return b.toString();
    }
}
