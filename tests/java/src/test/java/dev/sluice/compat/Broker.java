package dev.sluice.compat;

import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * The broker under test, shared by every test class in the run.
 *
 * <p>If {@code SLUICE_BOOTSTRAP} is set, the suite talks to that address and starts nothing
 * (this is how the suite is checked against Apache Kafka). Otherwise it starts the Sluice
 * binary ({@code SLUICE_BIN}, default {@code ../../target/release/sluice} relative to
 * tests/java) on free loopback ports with a temporary data directory, waits for the Kafka
 * port, and stops it when the whole run ends.
 */
public final class Broker implements BeforeAllCallback, ExtensionContext.Store.CloseableResource {

    private static final String STORE_KEY = "sluice-compat-broker";

    private static String bootstrap;
    private static String startFailure;
    private static Process process;
    private static Path dataDir;
    private static Path logFile;
    private static Thread shutdownHook;

    /** The bootstrap address ("host:port[,host:port...]") of the broker under test. */
    public static synchronized String bootstrap() {
        if (bootstrap == null) {
            start();
        }
        return bootstrap;
    }

    /** True when the suite started the broker itself (so it knows the advertised address). */
    public static synchronized boolean startedHere() {
        return process != null;
    }

    @Override
    public void beforeAll(ExtensionContext context) {
        synchronized (Broker.class) {
            bootstrap();
            // Register once in the root store: closed after the last test class.
            context.getRoot().getStore(ExtensionContext.Namespace.GLOBAL)
                    .getOrComputeIfAbsent(STORE_KEY, k -> new Broker(), Broker.class);
        }
    }

    @Override
    public void close() {
        stop();
    }

    private static void start() {
        if (startFailure != null) {
            fail(startFailure);
        }
        String env = System.getenv("SLUICE_BOOTSTRAP");
        if (env != null && !env.isBlank()) {
            bootstrap = env.trim();
            System.out.println("[compat] using SLUICE_BOOTSTRAP=" + bootstrap
                    + ", replication factor " + Clients.REPLICATION_FACTOR);
            return;
        }
        try {
            startSluice();
        } catch (AssertionError e) {
            startFailure = e.getMessage();
            throw e;
        } catch (Exception e) {
            startFailure = "could not start the Sluice broker: " + e;
            fail(startFailure, e);
        }
    }

    private static Path baseDir() {
        String basedir = System.getProperty("basedir");
        return Paths.get(basedir != null ? basedir : System.getProperty("user.dir")).toAbsolutePath();
    }

    private static void startSluice() throws Exception {
        String binEnv = System.getenv("SLUICE_BIN");
        Path bin = (binEnv != null && !binEnv.isBlank())
                ? Paths.get(binEnv).toAbsolutePath()
                : baseDir().resolve("../../target/release/sluice").normalize();
        if (!Files.isRegularFile(bin) || !Files.isExecutable(bin)) {
            fail("Sluice broker binary not found at " + bin
                    + ". Build it with `cargo build --release -p sluice-broker`, set SLUICE_BIN to"
                    + " the binary, or set SLUICE_BOOTSTRAP=host:port to test a running broker.");
        }
        int port = freePort();
        int adminPort = freePort();
        while (adminPort == port) {
            adminPort = freePort();
        }
        dataDir = Files.createTempDirectory("sluice-compat-");
        Path targetDir = baseDir().resolve("target");
        Files.createDirectories(targetDir);
        logFile = targetDir.resolve("sluice-broker.log");

        List<String> cmd = new ArrayList<>(List.of(
                bin.toString(), "start",
                "--listen", "127.0.0.1:" + port,
                "--advertised-listener", "127.0.0.1:" + port,
                "--admin-listen", "127.0.0.1:" + adminPort,
                "--data-dir", dataDir.toString(),
                "--cores", "2"));
        System.out.println("[compat] starting " + String.join(" ", cmd) + " (log: " + logFile + ")");
        ProcessBuilder pb = new ProcessBuilder(cmd)
                .redirectErrorStream(true)
                .redirectOutput(logFile.toFile());
        process = pb.start();
        shutdownHook = new Thread(Broker::stop, "sluice-broker-stop");
        Runtime.getRuntime().addShutdownHook(shutdownHook);

        long timeoutMs = TimeUnit.SECONDS.toMillis(envLong("SLUICE_START_TIMEOUT_S", 60));
        long deadline = System.currentTimeMillis() + timeoutMs;
        while (true) {
            if (!process.isAlive()) {
                int rc = process.exitValue();
                String tail = logTail();
                process = null;
                fail("Sluice broker exited with code " + rc + " during startup. Log tail ("
                        + logFile + "):\n" + tail);
            }
            if (portOpen(port)) {
                break;
            }
            if (System.currentTimeMillis() > deadline) {
                String tail = logTail();
                stop();
                fail("Sluice broker did not accept connections on 127.0.0.1:" + port + " within "
                        + timeoutMs / 1000 + " s. Log tail (" + logFile + "):\n" + tail);
            }
            Thread.sleep(100);
        }
        bootstrap = "127.0.0.1:" + port;
        System.out.println("[compat] Sluice up on " + bootstrap + " (admin port " + adminPort + ")");
    }

    static synchronized void stop() {
        Process p = process;
        if (p != null) {
            p.destroy(); // SIGTERM
            try {
                if (!p.waitFor(15, TimeUnit.SECONDS)) {
                    p.destroyForcibly();
                    p.waitFor(10, TimeUnit.SECONDS);
                }
            } catch (InterruptedException e) {
                p.destroyForcibly();
                Thread.currentThread().interrupt();
            }
            process = null;
        }
        if (dataDir != null) {
            deleteTree(dataDir);
            dataDir = null;
        }
        if (shutdownHook != null && Thread.currentThread() != shutdownHook) {
            try {
                Runtime.getRuntime().removeShutdownHook(shutdownHook);
            } catch (IllegalStateException ignored) {
                // already shutting down
            }
            shutdownHook = null;
        }
    }

    static long envLong(String name, long dflt) {
        String v = System.getenv(name);
        if (v == null || v.isBlank()) {
            return dflt;
        }
        return Long.parseLong(v.trim());
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            s.setReuseAddress(true);
            return s.getLocalPort();
        }
    }

    private static boolean portOpen(int port) {
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), 500);
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    private static String logTail() {
        try {
            List<String> lines = Files.readAllLines(logFile, StandardCharsets.UTF_8);
            return String.join("\n", lines.subList(Math.max(0, lines.size() - 40), lines.size()));
        } catch (IOException | UncheckedIOException e) {
            return "(could not read " + logFile + ": " + e + ")";
        }
    }

    private static void deleteTree(Path root) {
        try (Stream<Path> walk = Files.walk(root)) {
            walk.sorted(Comparator.reverseOrder()).forEach(p -> {
                try {
                    Files.deleteIfExists(p);
                } catch (IOException ignored) {
                    // best effort
                }
            });
        } catch (IOException ignored) {
            // best effort
        }
    }
}
