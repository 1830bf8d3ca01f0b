package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** launch --hosts: the hosts file and the ssh commands built from it. */
class SshHostsTest {

    @TempDir
    Path tmp;

    @Test
    void oneWorkerCommandPerHost() throws Exception {
        Path f = tmp.resolve("hosts");
        Files.writeString(f, "# gpu boxes\ngpu-1 cuda:0,cuda:1\n\nalice@gpu-2   # cpu only\n");
        List<SshHosts.Host> hosts = SshHosts.read(f);
        assertEquals(List.of(new SshHosts.Host("gpu-1", "cuda:0,cuda:1"), new SshHosts.Host("alice@gpu-2", "cpu")), hosts);
        List<String> c = SshHosts.command(hosts.get(1), "/opt/my runs", "10.0.0.5:25520", Duration.ofSeconds(20));
        assertEquals(List.of("ssh", "-tt", "-o", "BatchMode=yes", "alice@gpu-2"), c.subList(0, 5));
        assertEquals("cd '/opt/my runs' && SPARSELORA_ROLE=worker SPARSELORA_HOST=gpu-2 SPARSELORA_PORT=25520 SPARSELORA_SEED_1=10.0.0.5:25520"
                + " SPARSELORA_JAVA_OPTS=-Dsparselora.launch=multinode ./sparselora node --role worker --devices cpu --stable-after 20000ms", c.get(5));
        assertTrue(SshHosts.shellJoin(c).startsWith("ssh -tt -o BatchMode=yes alice@gpu-2 'cd '\\''/opt/my runs'\\'' && "));
    }

    @Test
    void dryRunPrintsTheCommandsAndStartsNothing() throws Exception {
        Path f = tmp.resolve("hosts");
        Files.writeString(f, "n1\nn2 cuda:0\n");
        Path job = tmp.resolve("job.yaml");
        Files.writeString(job, "model: m.bin\ndata: d.jsonl\nlora: {r: 4}\nsteps: 1\nbatch_size: 2\nseq_len: 8\noutput_dir: out\n");
        var out = new java.io.ByteArrayOutputStream();
        var old = System.out;
        System.setOut(new java.io.PrintStream(out, true));
        int rc;
        try {
            rc = Main.run("launch", "--hosts", f.toString(), "--bind", "10.0.0.5", "--remote-dir", "/srv/sl", "--dry-run", "train", "--config", job.toString());
        } finally {
            System.setOut(old);
        }
        assertEquals(0, rc);
        List<String> lines = out.toString().lines().toList();
        assertEquals(2, lines.size(), out.toString());
        assertTrue(lines.get(1).contains(" n2 ") && lines.get(1).contains("--devices cuda:0") && lines.get(1).contains("SPARSELORA_SEED_1=10.0.0.5:25520"), lines.get(1));
    }

    @Test
    void badLinesNameFileAndLine() throws Exception {
        Path f = tmp.resolve("hosts");
        Files.writeString(f, "n1\nn2 gpu:0\n");
        var e = assertThrows(IllegalArgumentException.class, () -> SshHosts.read(f));
        assertEquals(f + ":2: device 'gpu:0': expected cpu, cuda or cuda:<n>", e.getMessage());
        Files.writeString(f, "# nothing\n");
        assertThrows(IllegalArgumentException.class, () -> SshHosts.read(f));
    }
}
