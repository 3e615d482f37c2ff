package dev.sluice.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

/**
 * Test 5: the Kafka command-line tools (kafka-topics, kafka-console-producer,
 * kafka-console-consumer, kafka-leader-election, kafka-reassign-partitions) from the kafka-tools jar, each run as a child JVM on the test
 * classpath (their main methods call System.exit).
 */
@ExtendWith(Broker.class)
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class CliToolsTest {

    private static final String TOPICS = "org.apache.kafka.tools.TopicCommand";
    private static final String CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer";
    private static final String CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer";
    private static final String LEADER_ELECTION = "org.apache.kafka.tools.LeaderElectionCommand";
    private static final String REASSIGN = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand";
    /** How long a move may take: the new replicas catch up, then the Raft voters change. */
    private static final long REASSIGN_WAIT_S = 60;
    private static final int LINES = 100;

    private final String topic = Clients.uniqueTopic("compat-cli");

    @TempDir
    Path tmp;

    record Result(int exitCode, String stdout, String stderr) {
        List<String> lines() {
            return stdout.lines().collect(Collectors.toList());
        }

        @Override
        public String toString() {
            return "exit " + exitCode + "\n--- stdout ---\n" + stdout + "\n--- stderr ---\n" + stderr;
        }
    }

    @Test
    @Order(1)
    void kafkaTopicsCreateListDescribe() throws Exception {
        Result create = tool(TOPICS, null, 60, "--bootstrap-server", Broker.bootstrap(),
                "--create", "--topic", topic, "--partitions", "3", "--replication-factor", String.valueOf(Clients.REPLICATION_FACTOR),
                "--config", "retention.ms=86400000");
        assertEquals(0, create.exitCode(), () -> "kafka-topics --create: " + create);
        assertTrue(create.stdout().contains("Created topic " + topic), () -> "kafka-topics --create: " + create);
        Clients.awaitPreferredLeaders(topic, 3);

        Result list = tool(TOPICS, null, 60, "--bootstrap-server", Broker.bootstrap(), "--list");
        assertEquals(0, list.exitCode(), () -> "kafka-topics --list: " + list);
        assertTrue(list.lines().contains(topic), () -> "kafka-topics --list shows " + topic + ": " + list);

        Result describe = tool(TOPICS, null, 60, "--bootstrap-server", Broker.bootstrap(),
                "--describe", "--topic", topic);
        assertEquals(0, describe.exitCode(), () -> "kafka-topics --describe: " + describe);
        String out = describe.stdout();
        assertTrue(out.contains("Topic: " + topic), () -> "kafka-topics --describe: " + describe);
        assertTrue(out.contains("PartitionCount: 3"), () -> "kafka-topics --describe: " + describe);
        assertTrue(out.contains("ReplicationFactor: " + Clients.REPLICATION_FACTOR), () -> "kafka-topics --describe: " + describe);
        assertTrue(out.contains("retention.ms=86400000"), () -> "kafka-topics --describe: " + describe);
        for (int p = 0; p < 3; p++) {
            int part = p;
            assertTrue(out.lines().anyMatch(l -> l.contains("Partition: " + part + "\t") && l.contains("Leader: ")),
                    () -> "kafka-topics --describe lists partition " + part + ": " + describe);
        }
    }

    @Test
    @Order(2)
    void consoleProducerThenConsoleConsumer() throws Exception {
        Clients.awaitPartitionsReady(topic, 3); // see Clients.awaitPartitionsReady
        List<String> lines = new ArrayList<>();
        for (int i = 0; i < LINES; i++) {
            lines.add("key-" + i + ":cli line " + i + " \u00e9\u00e8 \u2713");
        }
        Path input = tmp.resolve("input.txt");
        Files.write(input, lines, StandardCharsets.UTF_8);

        Result produce = tool(CONSOLE_PRODUCER, input, 60, "--bootstrap-server", Broker.bootstrap(),
                "--topic", topic,
                "--reader-property", "parse.key=true", "--reader-property", "key.separator=:");
        assertEquals(0, produce.exitCode(), () -> "kafka-console-producer: " + produce);

        // Assign mode (--partition): consumer groups are a later issue, and without --partition
        // the console consumer joins a group. It stops after --timeout-ms without new records.
        List<String> got = new ArrayList<>();
        int processed = 0;
        for (int p = 0; p < 3; p++) {
            Result consume = tool(CONSOLE_CONSUMER, null, 90, "--bootstrap-server", Broker.bootstrap(),
                    "--topic", topic, "--partition", Integer.toString(p), "--offset", "earliest",
                    "--timeout-ms", "5000",
                    "--formatter-property", "print.key=true", "--formatter-property", "key.separator=:");
            assertEquals(0, consume.exitCode(), () -> "kafka-console-consumer: " + consume);
            consume.lines().stream().filter(l -> l.startsWith("key-")).forEach(got::add);
            java.util.regex.Matcher m = java.util.regex.Pattern.compile("Processed a total of (\\d+) messages")
                    .matcher(consume.stderr());
            assertTrue(m.find(), () -> "kafka-console-consumer summary: " + consume);
            processed += Integer.parseInt(m.group(1));
        }
        assertEquals(LINES, got.size(), "kafka-console-consumer printed every record once");
        assertEquals(new TreeSet<>(lines), new TreeSet<>(got), "records read back by kafka-console-consumer");
        assertEquals(LINES, processed, "kafka-console-consumer summaries add up");
    }

    @Test
    @Order(3)
    void kafkaLeaderElection() throws Exception {
        Clients.awaitPreferredLeaders(topic, 3);
        // Every partition is led by its preferred replica: there is nothing to elect, which the
        // tool reports as success.
        assertAlreadyElected(election("PREFERRED", "--topic", topic, "--partition", "0"), topic + "-0");
        Result all = election("PREFERRED", "--all-topic-partitions");
        assertEquals(0, all.exitCode(), () -> "kafka-leader-election --all-topic-partitions: " + all);
        // A partition with a leader needs no unclean election either.
        assertAlreadyElected(election("UNCLEAN", "--topic", topic, "--partition", "1"), topic + "-1");

        // A partition that does not exist fails the tool, naming it.
        Result missing = election("PREFERRED", "--topic", topic, "--partition", "7");
        assertTrue(missing.exitCode() != 0, () -> "kafka-leader-election on a missing partition: " + missing);
        assertTrue((missing.stdout() + missing.stderr()).contains(topic + "-7"),
                () -> "kafka-leader-election on a missing partition: " + missing);
    }

    @Test
    @Order(4)
    void kafkaReassignPartitions() throws Exception {
        String moved = Clients.uniqueTopic("compat-reassign");
        List<Integer> brokers;
        try (Admin admin = Clients.admin()) {
            brokers = admin.describeCluster().nodes().get(Clients.OP_TIMEOUT_S, TimeUnit.SECONDS)
                    .stream().map(Node::id).sorted().collect(Collectors.toList());
            // One replica, whatever the suite's replication factor: Clients.createTopic's wait
            // expects that factor.
            admin.createTopics(List.of(new NewTopic(moved, Map.of(0, List.of(brokers.get(0))))))
                    .all().get(Clients.OP_TIMEOUT_S, TimeUnit.SECONDS);
        }
        TopicPartition tp = new TopicPartition(moved, 0);
        try (KafkaConsumer<byte[], byte[]> c = Clients.consumer()) {
            c.endOffsets(List.of(tp), java.time.Duration.ofSeconds(Clients.OP_TIMEOUT_S));
        }
        try (KafkaProducer<byte[], byte[]> producer = Clients.producer(Map.of())) {
            for (int i = 0; i < LINES; i++) {
                producer.send(new ProducerRecord<>(moved, 0, bytes("key-" + i), bytes("moved " + i))).get();
            }
        }
        // On a cluster the partition leaves its only replica for two others; on one broker
        // the plan names the replica it has, which the tool carries out as a no-op.
        List<Integer> target = brokers.size() >= 3 ? List.of(brokers.get(2), brokers.get(1)) : List.of(brokers.get(0));
        Path plan = tmp.resolve("reassignment.json");
        Files.writeString(plan, "{\"version\":1,\"partitions\":[{\"topic\":\"" + moved
                + "\",\"partition\":0,\"replicas\":" + target + "}]}");
        Result execute = reassign("--reassignment-json-file", plan.toString(), "--execute");
        assertEquals(0, execute.exitCode(), () -> "kafka-reassign-partitions --execute: " + execute);
        assertTrue(execute.stdout().contains("Successfully started partition reassignment for " + moved + "-0"),
                () -> "kafka-reassign-partitions --execute: " + execute);

        // --verify reports the move done once the new replicas are the partition's voters, and
        // then clears replication throttles (none are set here).
        String done = "Reassignment of partition " + moved + "-0 is completed.";
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(REASSIGN_WAIT_S);
        Result verify = reassign("--reassignment-json-file", plan.toString(), "--verify");
        while (!verify.stdout().contains(done) && System.nanoTime() < deadline) {
            Thread.sleep(500);
            verify = reassign("--reassignment-json-file", plan.toString(), "--verify");
        }
        Result verified = verify;
        assertEquals(0, verified.exitCode(), () -> "kafka-reassign-partitions --verify: " + verified);
        assertTrue(verified.stdout().contains(done), () -> "kafka-reassign-partitions --verify: " + verified);
        Result list = reassign("--list");
        assertEquals(0, list.exitCode(), () -> "kafka-reassign-partitions --list: " + list);
        assertTrue(list.stdout().contains("No partition reassignments found."),
                () -> "kafka-reassign-partitions --list: " + list);

        try (Admin admin = Clients.admin()) {
            TopicDescription d = admin.describeTopics(List.of(moved)).allTopicNames()
                    .get(Clients.OP_TIMEOUT_S, TimeUnit.SECONDS).get(moved);
            List<Integer> replicas = d.partitions().get(0).replicas().stream().map(Node::id).collect(Collectors.toList());
            assertEquals(target, replicas, () -> "replicas after the move: " + d);
            Clients.waitUntil("the new replicas are in sync", java.time.Duration.ofSeconds(REASSIGN_WAIT_S), () -> {
                try (Admin a = Clients.admin()) {
                    TopicDescription now = a.describeTopics(List.of(moved)).allTopicNames()
                            .get(Clients.OP_TIMEOUT_S, TimeUnit.SECONDS).get(moved);
                    return new TreeSet<>(now.partitions().get(0).isr().stream().map(Node::id).collect(Collectors.toList()))
                            .equals(new TreeSet<>(target));
                } catch (Exception e) {
                    return false;
                }
            });
        }
        // Every record is read back from the new replicas, in order, with its key.
        try (KafkaConsumer<byte[], byte[]> consumer = Clients.consumer()) {
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<byte[], byte[]>> got = Clients.readUntil(consumer, Map.of(tp, (long) LINES),
                    java.time.Duration.ofSeconds(REASSIGN_WAIT_S)).get(tp);
            assertEquals(LINES, got.size(), "records read back after the move");
            for (int i = 0; i < LINES; i++) {
                ConsumerRecord<byte[], byte[]> r = got.get(i);
                assertEquals(i, r.offset(), "offset of record " + i);
                assertEquals("key-" + i, new String(r.key(), StandardCharsets.UTF_8));
                assertEquals("moved " + i, new String(r.value(), StandardCharsets.UTF_8));
            }
        }
    }

    private Result reassign(String... args) throws IOException, InterruptedException {
        List<String> all = new ArrayList<>(List.of("--bootstrap-server", Broker.bootstrap()));
        all.addAll(Arrays.asList(args));
        return tool(REASSIGN, null, 60, all.toArray(String[]::new));
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    /** kafka-leader-election with {@code --election-type type} and the given partitions. */
    private Result election(String type, String... partitions) throws IOException, InterruptedException {
        List<String> args = new ArrayList<>(List.of("--bootstrap-server", Broker.bootstrap(), "--election-type", type));
        args.addAll(Arrays.asList(partitions));
        return tool(LEADER_ELECTION, null, 60, args.toArray(String[]::new));
    }

    private static void assertAlreadyElected(Result r, String partition) {
        assertEquals(0, r.exitCode(), () -> "kafka-leader-election: " + r);
        assertTrue(r.stdout().contains("Valid replica already elected for partitions " + partition),
                () -> "kafka-leader-election: " + r);
    }

    /** Runs a Kafka tool main class in a child JVM with the test classpath; bounded by {@code timeoutS}. */
    private Result tool(String mainClass, Path stdin, long timeoutS, String... args) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>();
        cmd.add(Paths.get(System.getProperty("java.home"), "bin", "java").toString());
        cmd.add("-Xmx256m");
        cmd.add("-XX:TieredStopAtLevel=1");
        cmd.add("-Dfile.encoding=UTF-8");
        cmd.add("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn");
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(mainClass);
        cmd.addAll(Arrays.asList(args));
        String name = mainClass.substring(mainClass.lastIndexOf('.') + 1) + "-" + System.nanoTime();
        Path out = tmp.resolve(name + ".out");
        Path err = tmp.resolve(name + ".err");
        ProcessBuilder pb = new ProcessBuilder(cmd)
                .redirectOutput(out.toFile())
                .redirectError(err.toFile());
        if (stdin != null) {
            pb.redirectInput(stdin.toFile());
        }
        Process p = pb.start();
        if (stdin == null) {
            p.getOutputStream().close(); // empty stdin
        }
        if (!p.waitFor(timeoutS, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            p.waitFor(10, TimeUnit.SECONDS);
            fail(mainClass + " did not finish within " + timeoutS + " s.\n--- stdout ---\n"
                    + Files.readString(out, StandardCharsets.UTF_8) + "\n--- stderr ---\n"
                    + Files.readString(err, StandardCharsets.UTF_8));
        }
        return new Result(p.exitValue(), Files.readString(out, StandardCharsets.UTF_8),
                Files.readString(err, StandardCharsets.UTF_8));
    }
}
