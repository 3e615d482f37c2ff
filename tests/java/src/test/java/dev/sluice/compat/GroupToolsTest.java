package dev.sluice.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

/**
 * The kafka-consumer-groups tool (ConsumerGroupCommand from kafka-tools, run as a child JVM):
 * --list, --describe with CURRENT-OFFSET / LOG-END-OFFSET / LAG for an active and an empty
 * group, and --reset-offsets --to-earliest (refused while the group is active, --dry-run
 * changes nothing, --execute resets the committed offsets to 0).
 */
@ExtendWith(Broker.class)
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class GroupToolsTest {

    private static final String GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
    private static final long T = Clients.OP_TIMEOUT_S;
    private static final Duration REBALANCE = Duration.ofSeconds(60);

    private Admin admin;

    @TempDir
    Path tmp;

    record Result(int exitCode, String stdout, String stderr) {
        @Override
        public String toString() {
            return "exit " + exitCode + "\n--- stdout ---\n" + stdout + "\n--- stderr ---\n" + stderr;
        }
    }

    /** One row of a --describe or --reset-offsets table, by column name. */
    record Row(Map<String, String> cols) {
        String get(String col) {
            String v = cols.get(col);
            if (v == null) {
                fail("no column " + col + " in " + cols);
            }
            return v;
        }
    }

    @BeforeAll
    void open() {
        admin = Clients.admin();
    }

    @AfterAll
    void close() {
        if (admin != null) {
            admin.close(Duration.ofSeconds(10));
        }
    }

    @Test
    void describeWithLagThenResetToEarliest() throws Exception {
        String topic = Clients.uniqueTopic("compat-gtools");
        String group = Clients.uniqueTopic("compat-gtools-g");
        Clients.createTopic(admin, new NewTopic(topic, 2, Clients.REPLICATION_FACTOR));
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        try (KafkaProducer<byte[], byte[]> p = Clients.producer(Map.of())) {
            for (int i = 0; i < 30; i++) {
                p.send(new ProducerRecord<>(topic, 0, null, ("a" + i).getBytes(StandardCharsets.UTF_8)));
            }
            for (int i = 0; i < 20; i++) {
                p.send(new ProducerRecord<>(topic, 1, null, ("b" + i).getBytes(StandardCharsets.UTF_8)));
            }
            p.flush();
        }

        try (KafkaConsumer<byte[], byte[]> c = GroupConsumerTest.consumer(group, null,
                Map.of(ConsumerConfig.CLIENT_ID_CONFIG, "gtools-client"))) {
            c.subscribe(List.of(topic));
            long deadline = System.nanoTime() + REBALANCE.toNanos();
            while (c.assignment().size() < 2) {
                if (System.nanoTime() > deadline) {
                    fail("the consumer was not assigned both partitions within " + REBALANCE + ": " + c.assignment());
                }
                c.poll(Duration.ofMillis(100));
            }
            c.commitSync(Map.of(p0, new OffsetAndMetadata(10), p1, new OffsetAndMetadata(20)), Duration.ofSeconds(T));

            Result list = tool("--bootstrap-server", Broker.bootstrap(), "--list");
            assertEquals(0, list.exitCode(), () -> "--list: " + list);
            assertTrue(list.stdout().lines().anyMatch(l -> l.trim().equals(group)), () -> "--list shows " + group + ": " + list);

            Result active = tool("--bootstrap-server", Broker.bootstrap(), "--describe", "--group", group);
            assertEquals(0, active.exitCode(), () -> "--describe (active): " + active);
            Map<Integer, Row> rows = rows(active, topic, "CURRENT-OFFSET");
            assertLag(rows, 0, "10", "30", "20", active);
            assertLag(rows, 1, "20", "20", "0", active);
            for (Row r : rows.values()) {
                assertNotEquals("-", r.get("CONSUMER-ID"), () -> "an active member owns each partition: " + active);
                assertEquals("gtools-client", r.get("CLIENT-ID"), () -> "CLIENT-ID: " + active);
            }

            // Resetting an active group's offsets is refused and changes nothing.
            Result refused = tool("--bootstrap-server", Broker.bootstrap(), "--reset-offsets", "--to-earliest",
                    "--execute", "--group", group, "--topic", topic);
            assertTrue((refused.stdout() + refused.stderr()).contains("inactive"),
                    () -> "--reset-offsets on an active group is refused: " + refused);
            assertEquals(Map.of(p0, 10L, p1, 20L), committed(group), "offsets after the refused reset");
        }

        Result empty = tool("--bootstrap-server", Broker.bootstrap(), "--describe", "--group", group);
        assertEquals(0, empty.exitCode(), () -> "--describe (empty): " + empty);
        assertTrue((empty.stdout() + empty.stderr()).contains("has no active members"), () -> "--describe (empty): " + empty);
        Map<Integer, Row> emptyRows = rows(empty, topic, "CURRENT-OFFSET");
        assertLag(emptyRows, 0, "10", "30", "20", empty);
        assertLag(emptyRows, 1, "20", "20", "0", empty);

        Result dry = tool("--bootstrap-server", Broker.bootstrap(), "--reset-offsets", "--to-earliest",
                "--dry-run", "--group", group, "--topic", topic);
        assertEquals(0, dry.exitCode(), () -> "--reset-offsets --dry-run: " + dry);
        Map<Integer, Row> dryRows = rows(dry, topic, "NEW-OFFSET");
        assertEquals("0", dryRows.get(0).get("NEW-OFFSET"), () -> "--dry-run plan: " + dry);
        assertEquals("0", dryRows.get(1).get("NEW-OFFSET"), () -> "--dry-run plan: " + dry);
        assertEquals(Map.of(p0, 10L, p1, 20L), committed(group), "offsets after --dry-run");

        Result exec = tool("--bootstrap-server", Broker.bootstrap(), "--reset-offsets", "--to-earliest",
                "--execute", "--group", group, "--topic", topic);
        assertEquals(0, exec.exitCode(), () -> "--reset-offsets --execute: " + exec);
        Map<Integer, Row> execRows = rows(exec, topic, "NEW-OFFSET");
        assertEquals("0", execRows.get(0).get("NEW-OFFSET"), () -> "--execute result: " + exec);
        assertEquals("0", execRows.get(1).get("NEW-OFFSET"), () -> "--execute result: " + exec);
        assertEquals(Map.of(p0, 0L, p1, 0L), committed(group), "offsets after --reset-offsets --to-earliest --execute");

        Result after = tool("--bootstrap-server", Broker.bootstrap(), "--describe", "--group", group);
        assertEquals(0, after.exitCode(), () -> "--describe (after reset): " + after);
        Map<Integer, Row> afterRows = rows(after, topic, "CURRENT-OFFSET");
        assertLag(afterRows, 0, "0", "30", "30", after);
        assertLag(afterRows, 1, "0", "20", "20", after);

        admin.deleteConsumerGroups(List.of(group)).all().get(T, TimeUnit.SECONDS);
    }

    private static void assertLag(Map<Integer, Row> rows, int partition, String current, String logEnd, String lag, Result r) {
        Row row = rows.get(partition);
        if (row == null) {
            fail("no row for partition " + partition + ": " + r);
        }
        assertEquals(current, row.get("CURRENT-OFFSET"), () -> "CURRENT-OFFSET of partition " + partition + ": " + r);
        assertEquals(logEnd, row.get("LOG-END-OFFSET"), () -> "LOG-END-OFFSET of partition " + partition + ": " + r);
        assertEquals(lag, row.get("LAG"), () -> "LAG of partition " + partition + ": " + r);
    }

    /** Parses the table whose header contains {@code column}; returns its rows for {@code topic} by partition. */
    private static Map<Integer, Row> rows(Result r, String topic, String column) {
        List<String> header = null;
        Map<Integer, Row> out = new TreeMap<>();
        for (String line : r.stdout().lines().toList()) {
            String[] f = line.trim().split("\\s+");
            if (Arrays.asList(f).contains(column) && Arrays.asList(f).contains("PARTITION")) {
                header = Arrays.asList(f);
                continue;
            }
            if (header == null || f.length < header.size()) {
                continue;
            }
            Map<String, String> cols = new HashMap<>();
            for (int i = 0; i < header.size(); i++) {
                cols.put(header.get(i), f[i]);
            }
            if (topic.equals(cols.get("TOPIC"))) {
                out.put(Integer.parseInt(cols.get("PARTITION")), new Row(cols));
            }
        }
        assertFalse(out.isEmpty(), () -> "no " + column + " rows for " + topic + " in: " + r);
        return out;
    }

    private Map<TopicPartition, Long> committed(String group) throws Exception {
        Map<TopicPartition, Long> out = new HashMap<>();
        admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(T, TimeUnit.SECONDS)
                .forEach((tp, om) -> {
                    if (om != null) {
                        out.put(tp, om.offset());
                    }
                });
        return out;
    }

    /** Runs kafka-consumer-groups in a child JVM with the test classpath (its main calls System.exit). */
    private Result tool(String... args) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>();
        cmd.add(Paths.get(System.getProperty("java.home"), "bin", "java").toString());
        cmd.add("-Xmx256m");
        cmd.add("-XX:TieredStopAtLevel=1");
        cmd.add("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn");
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(GROUPS);
        cmd.addAll(Arrays.asList(args));
        Path out = tmp.resolve("groups-" + System.nanoTime() + ".out");
        Path err = tmp.resolve("groups-" + System.nanoTime() + ".err");
        Process p = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile()).start();
        p.getOutputStream().close();
        long timeoutS = 90;
        if (!p.waitFor(timeoutS, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            p.waitFor(10, TimeUnit.SECONDS);
            fail("kafka-consumer-groups " + String.join(" ", args) + " did not finish within " + timeoutS
                    + " s.\n--- stdout ---\n" + Files.readString(out, StandardCharsets.UTF_8)
                    + "\n--- stderr ---\n" + Files.readString(err, StandardCharsets.UTF_8));
        }
        return new Result(p.exitValue(), Files.readString(out, StandardCharsets.UTF_8),
                Files.readString(err, StandardCharsets.UTF_8));
    }
}
