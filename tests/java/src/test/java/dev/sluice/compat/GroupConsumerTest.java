package dev.sluice.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.MemberToRemove;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.RemoveMembersFromConsumerGroupOptions;
import org.apache.kafka.clients.consumer.CommitFailedException;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.FencedInstanceIdException;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * Consumer groups with the Java consumer (classic protocol, cooperative-sticky assignor,
 * manual commitSync after processing): two members split a topic and one takes over when the
 * other leaves; static membership survives a restart without a rebalance; a duplicate
 * group.instance.id fences the older member.
 */
@ExtendWith(Broker.class)
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class GroupConsumerTest {

    private static final long T = Clients.OP_TIMEOUT_S;
    private static final int PARTITIONS = 4;
    /** Bound for a group to (re)stabilize: covers group.initial.rebalance.delay.ms (3 s) and two cooperative rounds. */
    private static final Duration REBALANCE = Duration.ofSeconds(60);

    private Admin admin;

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

    /**
     * A alone gets all four partitions; B joins and the cooperative protocol moves two of them
     * (A revokes exactly those, never loses any); a producer keeps sending; B closes cleanly
     * (LeaveGroup) and A takes over everything, resuming each of B's partitions at B's last
     * committed offset; every message is processed at least once.
     */
    @Test
    void twoConsumersSplitThenOneTakesOver() throws Exception {
        long t0 = System.nanoTime();
        String topic = Clients.uniqueTopic("compat-group");
        String group = Clients.uniqueTopic("compat-group-g");
        Clients.createTopic(admin, new NewTopic(topic, PARTITIONS, Clients.REPLICATION_FACTOR));
        Processed processed = new Processed();
        int total = 2000;
        int first = 800;

        try (KafkaProducer<byte[], byte[]> producer = Clients.producer(Map.of())) {
            send(producer, topic, 0, first);
            producer.flush();

            Worker a = new Worker("A", consumer(group, null, Map.of()), topic, processed).start();
            Worker b = null;
            Thread background = null;
            try {
                await("A owns all " + PARTITIONS + " partitions", REBALANCE,
                        () -> a.owned().size() == PARTITIONS, a);
                b = new Worker("B", consumer(group, null, Map.of()), topic, processed).start();
                Worker bb = b;
                await("A and B each own 2 partitions", REBALANCE,
                        () -> a.owned().size() == 2 && bb.owned().size() == 2, a, b);
                Set<TopicPartition> aOwned = a.owned();
                Set<TopicPartition> bOwned = b.owned();
                Set<TopicPartition> union = new HashSet<>(aOwned);
                union.addAll(bOwned);
                assertEquals(PARTITIONS, union.size(), "A " + aOwned + " and B " + bOwned + " are disjoint and cover the topic");
                assertEquals(List.of(), a.lost, "A never lost partitions (cooperative rebalance)");
                assertEquals(bOwned, a.revokedUnion(), "A revoked exactly the partitions B now owns");

                // Keep producing while B processes, then close B cleanly.
                background = new Thread(() -> {
                    for (int i = first; i < total; i += 100) {
                        send(producer, topic, i, Math.min(total, i + 100));
                        producer.flush();
                        sleep(100);
                    }
                }, "group-test-producer");
                background.start();
                await("B has processed 200 records", REBALANCE, () -> bb.records.get() >= 200, a, b);
                b.stopAndJoin();
                assertEquals(null, b.failure, () -> "B failed: " + bb.failure);
                Map<TopicPartition, Long> bFinal = new HashMap<>(b.committed);
                for (TopicPartition tp : bOwned) {
                    assertNotNull(bFinal.get(tp), "B committed an offset for " + tp);
                }

                await("A owns all partitions again after B left", REBALANCE,
                        () -> a.owned().size() == PARTITIONS, a);
                background.join(TimeUnit.SECONDS.toMillis(T));
                assertTrue(!background.isAlive(), "background producer finished");
                await("every message processed", REBALANCE, () -> processed.distinct() == total, a);
                Map<TopicPartition, Long> end = endOffsets(topic);
                await("A committed up to the end offsets " + end, REBALANCE, () -> a.committed.equals(end), a);
                a.stopAndJoin();
                assertEquals(null, a.failure, () -> "A failed: " + a.failure);

                // A resumed each partition it took over at B's last committed offset.
                for (TopicPartition tp : bOwned) {
                    List<Long> firsts = a.firstOffsets.get(tp);
                    assertNotNull(firsts, "A fetched from " + tp + " after the takeover");
                    assertEquals(bFinal.get(tp), firsts.get(firsts.size() - 1),
                            "A's first record on " + tp + " after taking it over is at B's last committed offset");
                }
                Map<TopicPartition, Long> committed = committedOffsets(group);
                assertEquals(end, committed, "the group's committed offsets are the end offsets");
                processed.assertAllOffsets(end);
                assertEquals(total, processed.distinct(), "every message processed at least once");
                System.out.printf("[compat] GroupConsumerTest.split/takeover: %d messages, %d duplicates,"
                                + " A=%d B=%d records, %d ms%n", total, processed.duplicates(), a.records.get(),
                        b.records.get(), TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0));
            } finally {
                a.stopQuietly();
                if (b != null) {
                    b.stopQuietly();
                }
                if (background != null) {
                    background.join(TimeUnit.SECONDS.toMillis(T));
                }
            }
        }
    }

    /**
     * Static membership: A (group.instance.id) closes without leaving; the group keeps it as a
     * member and B keeps its own partitions; A restarts with the same instance id well within the
     * session timeout and gets its partitions back, resuming at its committed offsets, without B
     * being revoked or reassigned. At the end both static members are removed with a batched
     * LeaveGroup (AdminClient removeMembersFromConsumerGroup).
     */
    @Test
    void staticMemberRestartsWithoutRebalance() throws Exception {
        long t0 = System.nanoTime();
        String topic = Clients.uniqueTopic("compat-group-static");
        String group = Clients.uniqueTopic("compat-group-static-g");
        String idA = "static-a-" + group;
        String idB = "static-b-" + group;
        Clients.createTopic(admin, new NewTopic(topic, PARTITIONS, Clients.REPLICATION_FACTOR));
        Processed processed = new Processed();
        Map<String, Object> staticCfg = Map.of(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "30000");

        try (KafkaProducer<byte[], byte[]> producer = Clients.producer(Map.of())) {
            send(producer, topic, 0, 400);
            producer.flush();
            Worker a = new Worker("A", consumer(group, idA, staticCfg), topic, processed).start();
            Worker b = null;
            Worker a2 = null;
            try {
                await("A owns all partitions", REBALANCE, () -> a.owned().size() == PARTITIONS, a);
                b = new Worker("B", consumer(group, idB, staticCfg), topic, processed).start();
                Worker bb = b;
                await("A and B each own 2 partitions", REBALANCE,
                        () -> a.owned().size() == 2 && bb.owned().size() == 2, a, b);
                await("400 messages processed", REBALANCE, () -> processed.distinct() == 400, a, b);
                Map<TopicPartition, Long> end1 = endOffsets(topic);
                await("A and B committed everything", REBALANCE, () -> {
                    Map<TopicPartition, Long> c = new HashMap<>(a.committed);
                    c.putAll(bb.committed);
                    return c.equals(end1);
                }, a, b);
                Set<TopicPartition> aOwned = a.owned();
                Set<TopicPartition> bOwned = b.owned();
                int bAssignEvents = b.assigned.size();
                int bRevokeEvents = b.revoked.size();
                ConsumerGroupDescription before = describe(group);
                String aMemberBefore = memberOf(before, idA).consumerId();

                // Close A without leaving the group (static members do not send LeaveGroup on close).
                a.stopAndJoin();
                assertEquals(null, a.failure, () -> "A failed: " + a.failure);
                long closedAt = System.nanoTime();
                ConsumerGroupDescription whileDown = describe(group);
                assertEquals(GroupState.STABLE, whileDown.groupState(), "group state while A is down: " + whileDown);
                assertEquals(2, whileDown.members().size(), "A is still a member while down: " + whileDown);
                assertEquals(aMemberBefore, memberOf(whileDown, idA).consumerId(), "A's member id while down");

                send(producer, topic, 400, 800);
                producer.flush();
                Thread.sleep(2000);
                assertEquals(bOwned, b.owned(), "B kept exactly its partitions while A was down");

                a2 = new Worker("A'", consumer(group, idA, staticCfg), topic, processed).start();
                Worker aa = a2;
                await("restarted A owns its old partitions " + aOwned, REBALANCE,
                        () -> aa.owned().equals(aOwned), a2, b);
                long downMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - closedAt);
                assertTrue(downMs < 30000, "A was back within the session timeout (" + downMs + " ms)");
                await("800 messages processed", REBALANCE, () -> processed.distinct() == 800, a2, b);
                Map<TopicPartition, Long> end2 = endOffsets(topic);
                await("A' and B committed everything", REBALANCE, () -> {
                    Map<TopicPartition, Long> c = new HashMap<>(aa.committed);
                    c.putAll(bb.committed);
                    return c.equals(end2);
                }, a2, b);

                // B was never revoked, never lost partitions and never got a new assignment.
                assertEquals(bOwned, b.owned(), "B's partitions after A's restart");
                assertEquals(bRevokeEvents, b.revoked.size(), () -> "B revocations: " + bb.revoked);
                assertEquals(bAssignEvents, b.assigned.size(), () -> "B assignments: " + bb.assigned);
                assertEquals(List.of(), b.lost, "B lost no partitions");
                // A resumed its partitions at the offsets it had committed before the restart.
                for (TopicPartition tp : aOwned) {
                    assertEquals(List.of(end1.get(tp)), a2.firstOffsets.get(tp),
                            "restarted A's first record on " + tp + " is at its committed offset");
                }
                ConsumerGroupDescription after = describe(group);
                assertEquals(GroupState.STABLE, after.groupState(), "group state after A's restart: " + after);
                assertEquals(2, after.members().size(), "members after A's restart: " + after);
                MemberDescription aAfter = memberOf(after, idA);
                assertNotEquals(aMemberBefore, aAfter.consumerId(), "a rejoining static member gets a new member id");
                assertEquals(aOwned, aAfter.assignment().topicPartitions(), "A's assignment in DescribeGroups");
                assertEquals(bOwned, memberOf(after, idB).assignment().topicPartitions(), "B's assignment in DescribeGroups");

                a2.stopAndJoin();
                b.stopAndJoin();
                assertEquals(null, a2.failure, () -> "A' failed: " + aa.failure);
                assertEquals(null, b.failure, () -> "B failed: " + bb.failure);
                assertEquals(2, describe(group).members().size(), "closed static members stay in the group");
                // Batched LeaveGroup by instance id empties the group at once.
                admin.removeMembersFromConsumerGroup(group, new RemoveMembersFromConsumerGroupOptions(
                                List.of(new MemberToRemove(idA), new MemberToRemove(idB))))
                        .all().get(T, TimeUnit.SECONDS);
                ConsumerGroupDescription empty = describe(group);
                assertEquals(GroupState.EMPTY, empty.groupState(), "group after removing both members: " + empty);
                assertEquals(0, empty.members().size(), "members after removing both: " + empty);
                assertEquals(end2, committedOffsets(group), "committed offsets survive the members' removal");
                processed.assertAllOffsets(end2);
                System.out.printf("[compat] GroupConsumerTest.static: A down %d ms, %d duplicates, %d ms%n",
                        downMs, processed.duplicates(), TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0));
            } finally {
                a.stopQuietly();
                if (b != null) {
                    b.stopQuietly();
                }
                if (a2 != null) {
                    a2.stopQuietly();
                }
            }
        }
    }

    /** A second consumer with the same group.instance.id replaces the first, which is fenced. */
    @Test
    void duplicateInstanceIdFencesTheOlderMember() throws Exception {
        String topic = Clients.uniqueTopic("compat-group-fence");
        String group = Clients.uniqueTopic("compat-group-fence-g");
        String id = "fenced-" + group;
        Clients.createTopic(admin, new NewTopic(topic, 2, Clients.REPLICATION_FACTOR));
        Processed processed = new Processed();
        Map<String, Object> cfg = Map.of(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "30000",
                ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
        Worker c1 = new Worker("C1", consumer(group, id, cfg), topic, processed).start();
        Worker c2 = null;
        try {
            await("C1 owns both partitions", REBALANCE, () -> c1.owned().size() == 2, c1);
            String c1Member = describe(group).members().iterator().next().consumerId();
            c2 = new Worker("C2", consumer(group, id, cfg), topic, processed).start();
            Worker cc = c2;
            await("C2 owns both partitions", REBALANCE, () -> cc.owned().size() == 2, c2);
            try {
                Clients.waitUntil("C1 is fenced", Duration.ofSeconds(20), () -> c1.failure != null || !c1.thread.isAlive());
            } catch (AssertionError e) {
                fail("C1 was not fenced within 20 s (its Heartbeat with the replaced member id and the same"
                        + " group.instance.id should fail with FENCED_INSTANCE_ID); instead C1 was assigned "
                        + c1.assigned.size() + " times and lost its partitions " + c1.lost.size() + " times, C2 "
                        + cc.assigned.size() + " and " + cc.lost.size() + " times", e);
            }
            assertInstanceOf(FencedInstanceIdException.class, c1.failure, () -> "C1 ended with " + c1.failure);
            ConsumerGroupDescription d = describe(group);
            assertEquals(1, d.members().size(), "one member after the replacement: " + d);
            assertNotEquals(c1Member, d.members().iterator().next().consumerId(), "C2 has a new member id");
            c2.stopAndJoin();
            assertEquals(null, c2.failure, () -> "C2 failed: " + cc.failure);
            admin.removeMembersFromConsumerGroup(group, new RemoveMembersFromConsumerGroupOptions(
                    List.of(new MemberToRemove(id)))).all().get(T, TimeUnit.SECONDS);
        } finally {
            c1.stopQuietly();
            if (c2 != null) {
                c2.stopQuietly();
            }
        }
    }

    /**
     * A member of the current generation may commit while the group is preparing a rebalance
     * (before it has rejoined): Kafka accepts the commit (it refuses only in
     * CompletingRebalance), which is what lets members commit processed work before giving up
     * partitions instead of reprocessing it.
     */
    @Test
    void commitWhilePreparingRebalanceIsAccepted() throws Exception {
        String topic = Clients.uniqueTopic("compat-group-prep");
        String group = Clients.uniqueTopic("compat-group-prep-g");
        Clients.createTopic(admin, new NewTopic(topic, 2, Clients.REPLICATION_FACTOR));
        TopicPartition p0 = new TopicPartition(topic, 0);
        try (KafkaConsumer<byte[], byte[]> a = consumer(group, null, Map.of());
             KafkaConsumer<byte[], byte[]> b = consumer(group, null, Map.of())) {
            a.subscribe(List.of(topic));
            long deadline = System.nanoTime() + REBALANCE.toNanos();
            while (a.assignment().size() < 2) {
                if (System.nanoTime() > deadline) {
                    fail("A was not assigned both partitions within " + REBALANCE);
                }
                a.poll(Duration.ofMillis(100));
            }
            // B's JoinGroup starts a rebalance; A does not poll, so the group waits for it.
            b.subscribe(List.of(topic));
            b.poll(Duration.ofMillis(200));
            Clients.waitUntil("the group is preparing a rebalance", REBALANCE, () -> {
                try {
                    b.poll(Duration.ofMillis(50));
                    return describe(group).groupState() == GroupState.PREPARING_REBALANCE;
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            try {
                a.commitSync(Map.of(p0, new OffsetAndMetadata(0, "during-rebalance")), Duration.ofSeconds(T));
            } catch (RebalanceInProgressException e) {
                fail("OffsetCommit from a current-generation member while the group is PreparingRebalance was"
                        + " refused with REBALANCE_IN_PROGRESS; Kafka accepts it", e);
            }
            assertEquals("during-rebalance", admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata()
                    .get(T, TimeUnit.SECONDS).get(p0).metadata(), "the commit made during the rebalance is stored");
            // Both rejoin and the group settles with one partition each.
            deadline = System.nanoTime() + REBALANCE.toNanos();
            while (a.assignment().size() != 1 || b.assignment().size() != 1) {
                if (System.nanoTime() > deadline) {
                    fail("A " + a.assignment() + " and B " + b.assignment() + " did not settle within " + REBALANCE);
                }
                a.poll(Duration.ofMillis(50));
                b.poll(Duration.ofMillis(50));
            }
        }
    }

    // ------------------------------------------------------------------ helpers

    static KafkaConsumer<byte[], byte[]> consumer(String group, String instanceId, Map<String, Object> overrides) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, Broker.bootstrap());
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, CooperativeStickyAssignor.class.getName());
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "50");
        p.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "100");
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        if (instanceId != null) {
            p.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, instanceId);
            p.put(ConsumerConfig.CLIENT_ID_CONFIG, instanceId);
        }
        p.putAll(overrides);
        return new KafkaConsumer<>(p);
    }

    /** Sends messages i in [from, to) with value "m-i" to partition i % PARTITIONS. */
    static void send(KafkaProducer<byte[], byte[]> producer, String topic, int from, int to) {
        for (int i = from; i < to; i++) {
            producer.send(new ProducerRecord<>(topic, i % PARTITIONS, ("k-" + i).getBytes(StandardCharsets.UTF_8),
                    ("m-" + i).getBytes(StandardCharsets.UTF_8)));
        }
    }

    private Map<TopicPartition, Long> endOffsets(String topic) {
        try (KafkaConsumer<byte[], byte[]> c = Clients.consumer()) {
            return new HashMap<>(Clients.endOffsets(c, Clients.partitions(topic, PARTITIONS)));
        }
    }

    private Map<TopicPartition, Long> committedOffsets(String group) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> m = admin.listConsumerGroupOffsets(group)
                .partitionsToOffsetAndMetadata().get(T, TimeUnit.SECONDS);
        Map<TopicPartition, Long> out = new HashMap<>();
        m.forEach((tp, om) -> {
            if (om != null) {
                out.put(tp, om.offset());
            }
        });
        return out;
    }

    private ConsumerGroupDescription describe(String group) throws Exception {
        return admin.describeConsumerGroups(List.of(group)).describedGroups().get(group).get(T, TimeUnit.SECONDS);
    }

    private static MemberDescription memberOf(ConsumerGroupDescription d, String instanceId) {
        return d.members().stream().filter(m -> m.groupInstanceId().equals(java.util.Optional.of(instanceId)))
                .findFirst().orElseGet(() -> fail("no member with instance id " + instanceId + " in " + d));
    }

    /** Like Clients.waitUntil, but fails at once if a worker died. */
    static void await(String what, Duration timeout, BooleanSupplier cond, Worker... workers) throws InterruptedException {
        Clients.waitUntil(what, timeout, () -> {
            for (Worker w : workers) {
                if (w.failure != null) {
                    fail("consumer " + w.name + " failed while waiting until " + what + ": " + w.failure, w.failure);
                }
            }
            return cond.getAsBoolean();
        });
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** Every processed (partition, offset), with counts, shared by the consumers of one test. */
    static final class Processed {
        final ConcurrentHashMap<String, AtomicInteger> byOffset = new ConcurrentHashMap<>();
        final Set<String> messages = ConcurrentHashMap.newKeySet();

        void add(ConsumerRecord<byte[], byte[]> r) {
            byOffset.computeIfAbsent(r.partition() + "@" + r.offset(), k -> new AtomicInteger()).incrementAndGet();
            String v = new String(r.value(), StandardCharsets.UTF_8);
            int i = Integer.parseInt(v.substring(2));
            assertEquals(i % PARTITIONS, r.partition(), "message " + v + " on its partition");
            messages.add(v);
        }

        int distinct() {
            return messages.size();
        }

        int duplicates() {
            return byOffset.values().stream().mapToInt(a -> a.get() - 1).sum();
        }

        void assertAllOffsets(Map<TopicPartition, Long> end) {
            Map<Integer, List<Long>> missing = new TreeMap<>();
            for (Map.Entry<TopicPartition, Long> e : end.entrySet()) {
                for (long o = 0; o < e.getValue(); o++) {
                    if (!byOffset.containsKey(e.getKey().partition() + "@" + o)) {
                        missing.computeIfAbsent(e.getKey().partition(), k -> new ArrayList<>()).add(o);
                    }
                }
            }
            assertEquals(Map.of(), missing, "offsets never processed (partition -> offsets)");
        }
    }

    /**
     * One group member on its own thread: poll, process (record), commitSync the processed
     * offsets; commits what it processed on revocation; closes the consumer when stopped.
     */
    static final class Worker implements Runnable, ConsumerRebalanceListener {
        final String name;
        final KafkaConsumer<byte[], byte[]> consumer;
        final String topic;
        final Processed processed;
        final Thread thread;
        final AtomicInteger records = new AtomicInteger();
        final List<Set<TopicPartition>> assigned = new CopyOnWriteArrayList<>();
        final List<Set<TopicPartition>> revoked = new CopyOnWriteArrayList<>();
        final List<Set<TopicPartition>> lost = new CopyOnWriteArrayList<>();
        /** Per partition: the offset of the first record received after each (re)assignment. */
        final Map<TopicPartition, List<Long>> firstOffsets = new ConcurrentHashMap<>();
        /** Last successfully committed next-offset per partition. */
        final Map<TopicPartition, Long> committed = new ConcurrentHashMap<>();
        final AtomicInteger commitFailures = new AtomicInteger();
        private final Set<TopicPartition> awaitingFirst = new HashSet<>();
        private final Map<TopicPartition, Long> pending = new HashMap<>();
        private final Set<TopicPartition> owned = ConcurrentHashMap.newKeySet();
        private volatile boolean running = true;
        volatile Throwable failure;

        Worker(String name, KafkaConsumer<byte[], byte[]> consumer, String topic, Processed processed) {
            this.name = name;
            this.consumer = consumer;
            this.topic = topic;
            this.processed = processed;
            this.thread = new Thread(this, "group-worker-" + name);
            this.thread.setDaemon(true);
        }

        Worker start() {
            thread.start();
            return this;
        }

        Set<TopicPartition> owned() {
            return Set.copyOf(owned);
        }

        Set<TopicPartition> revokedUnion() {
            Set<TopicPartition> s = new HashSet<>();
            revoked.forEach(s::addAll);
            return s;
        }

        @Override
        public void run() {
            try {
                consumer.subscribe(List.of(topic), this);
                while (running) {
                    ConsumerRecords<byte[], byte[]> recs = consumer.poll(Duration.ofMillis(100));
                    for (ConsumerRecord<byte[], byte[]> r : recs) {
                        TopicPartition tp = new TopicPartition(r.topic(), r.partition());
                        if (awaitingFirst.remove(tp)) {
                            firstOffsets.computeIfAbsent(tp, k -> new CopyOnWriteArrayList<>()).add(r.offset());
                        }
                        processed.add(r);
                        records.incrementAndGet();
                        pending.put(tp, r.offset() + 1);
                    }
                    commitPending(pending.keySet(), false);
                }
                commitPending(pending.keySet(), true);
            } catch (WakeupException e) {
                // stopQuietly
            } catch (Throwable t) {
                failure = t;
            } finally {
                try {
                    consumer.close(Duration.ofSeconds(T));
                } catch (Throwable t) {
                    if (failure == null) {
                        failure = t;
                    }
                }
            }
        }

        private void commitPending(Collection<TopicPartition> tps, boolean mustSucceed) {
            Map<TopicPartition, OffsetAndMetadata> m = new HashMap<>();
            for (TopicPartition tp : tps) {
                Long o = pending.get(tp);
                if (o != null) {
                    m.put(tp, new OffsetAndMetadata(o));
                }
            }
            if (m.isEmpty()) {
                return;
            }
            try {
                consumer.commitSync(m, Duration.ofSeconds(T));
                m.forEach((tp, om) -> committed.put(tp, om.offset()));
                m.keySet().forEach(pending::remove);
            } catch (RebalanceInProgressException | CommitFailedException e) {
                if (mustSucceed) {
                    throw e;
                }
                commitFailures.incrementAndGet(); // retried after the next poll
            }
        }

        @Override
        public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
            if (partitions.isEmpty()) {
                return;
            }
            revoked.add(Set.copyOf(partitions));
            commitPending(partitions, false);
            partitions.forEach(pending::remove);
            owned.removeAll(partitions);
            awaitingFirst.removeAll(partitions);
        }

        @Override
        public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
            if (partitions.isEmpty()) {
                return;
            }
            assigned.add(Set.copyOf(partitions));
            owned.addAll(partitions);
            awaitingFirst.addAll(partitions);
        }

        @Override
        public void onPartitionsLost(Collection<TopicPartition> partitions) {
            if (partitions.isEmpty()) {
                return;
            }
            lost.add(Set.copyOf(partitions));
            partitions.forEach(pending::remove);
            owned.removeAll(partitions);
            awaitingFirst.removeAll(partitions);
        }

        void stopAndJoin() throws InterruptedException {
            running = false;
            thread.join(TimeUnit.SECONDS.toMillis(2 * T));
            if (thread.isAlive()) {
                consumer.wakeup();
                fail("consumer " + name + " did not stop within " + 2 * T + " s");
            }
        }

        void stopQuietly() {
            running = false;
            try {
                thread.join(TimeUnit.SECONDS.toMillis(2 * T));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            if (thread.isAlive()) {
                consumer.wakeup();
            }
        }

        @Override
        public String toString() {
            return name + " owned=" + owned + " assigned=" + assigned + " revoked=" + revoked + " lost=" + lost
                    + " commitFailures=" + commitFailures;
        }
    }
}
