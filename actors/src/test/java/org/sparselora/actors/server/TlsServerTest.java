package org.sparselora.actors.server;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.time.Duration;
import java.util.Base64;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.SpawnProtocol;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.cli.CliRunner;
import org.sparselora.actors.pipeline.JobSupervisor;
import org.sparselora.actors.pipeline.PredictorCache;

/**
 * {@code serve --tls-cert/--tls-key} with a certificate made here by the JDK's keytool: a TLS
 * client that trusts it gets through (with the token), a plaintext client does not.
 */
class TlsServerTest {

    @TempDir
    Path dir;

    @Test
    void theServerSpeaksTlsWithTheGivenCertificate() throws Exception {
        Path ks = dir.resolve("ks.p12");
        String keytool = Path.of(ProcessHandle.current().info().command().orElseThrow()).resolveSibling("keytool").toString();
        Process p = new ProcessBuilder(keytool, "-genkeypair", "-alias", "s", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=localhost",
                "-ext", "SAN=ip:127.0.0.1,dns:localhost", "-validity", "2", "-storetype", "PKCS12", "-keystore", ks.toString(),
                "-storepass", "changeit", "-keypass", "changeit").redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes());
        assertEquals(0, p.waitFor(), log);
        KeyStore store = KeyStore.getInstance("PKCS12");
        try (var in = Files.newInputStream(ks)) {
            store.load(in, "changeit".toCharArray());
        }
        Path cert = dir.resolve("cert.pem"), key = dir.resolve("key.pem"), token = dir.resolve("token");
        Files.writeString(cert, pem("CERTIFICATE", store.getCertificate("s").getEncoded()));
        Files.writeString(key, pem("PRIVATE KEY", ((PrivateKey) store.getKey("s", "changeit".toCharArray())).getEncoded()));
        Files.writeString(token, "tls-token-0123456789");

        ActorSystem<SpawnProtocol.Command> system = ActorSystem.create(SpawnProtocol.create(), "tls-test");
        try (JobManager jobs = new JobManager(system, 1, JobManager.engines(), new JobSupervisor.Settings(Duration.ofSeconds(20), 3, 3, new PredictorCache()));
             ControlServer server = ControlServer.start(new ControlServer.Options("127.0.0.1", 0, token, cert, key, 1 << 20, null, java.util.List.of(dir), false), jobs)) {
            String addr = "127.0.0.1:" + server.port();
            CliRunner.Result ok = CliRunner.run("jobs", "--server", addr, "--tls-ca", cert.toString(), "--token-file", token.toString());
            assertEquals(0, ok.code(), ok.err());
            assertTrue(ok.out().startsWith("ID "), ok.out());
            CliRunner.Result plain = CliRunner.run("jobs", "--server", addr, "--token-file", token.toString());
            assertEquals(2, plain.code());
            assertTrue(plain.err().contains("UNAVAILABLE"), plain.err());
            CliRunner.Result untrusted = CliRunner.run("jobs", "--server", addr, "--tls", "--token-file", token.toString());
            assertEquals(2, untrusted.code(), "a certificate nobody vouches for is refused");
        } finally {
            system.terminate();
        }
    }

    static String pem(String type, byte[] der) {
        return "-----BEGIN " + type + "-----\n" + Base64.getMimeEncoder(64, "\n".getBytes(StandardCharsets.US_ASCII)).encodeToString(der)
                + "\n-----END " + type + "-----\n";
    }
}
