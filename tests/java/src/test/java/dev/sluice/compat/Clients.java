package dev.sluice.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/** Client factories and small helpers shared by the tests. */
final class Clients {

    /** Bound for single client operations (create topic, describe, ...). */
    static final long OP_TIMEOUT_S = 30;

    /**
     * The replication factor of every topic the tests create: SLUICE_TEST_REPLICATION_FACTOR,
     * default 1 (3 against a three-broker cluster).
     */
    static final short REPLICATION_FACTOR = replicationFactor();

    private static short replicationFactor() {
        String v = System.getenv("SLUICE_TEST_REPLICATION_FACTOR");
        if (v == null || v.isBlank()) {
            return 1;
        }
        try {
            short n = Short.parseShort(v.trim());
            if (n >= 1) {
                return n;
            }
        } catch (NumberFormatException e) {
            // reported below
        }
        throw new IllegalArgumentException("SLUICE_TEST_REPLICATION_FACTOR=" + v + " is not a positive number");
    }

    private Clients() {
    }

    static String uniqueTopic(String prefix) {
        return prefix + "-" + UUID.randomUUID().toString().substring(0, 8);
    }

    static Admin admin() {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, Broker.bootstrap());
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "sluice-compat-admin");
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        return Admin.create(p);
    }

    /** A producer with the client's default settings (idempotent, acks=all) unless overridden. */
    static KafkaProducer<byte[], byte[]> producer(Map<String, Object> overrides) {
        Map<String, Object> p = new HashMap<>();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, Broker.bootstrap());
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        p.putAll(overrides);
        return new KafkaProducer<>(p);
    }

    /** A consumer without a group, for assign()/seek() use. */
    static KafkaConsumer<byte[], byte[]> consumer() {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, Broker.bootstrap());
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "2000");
        // After a seek, the next poll waits for the fetch already in flight; keep that short.
        p.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "100");
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        return new KafkaConsumer<>(p);
    }

    /** Creates the topic and waits until every partition answers ListOffsets at its leader. */
    static void createTopic(Admin admin, NewTopic topic) throws Exception {
        admin.createTopics(List.of(topic)).all().get(OP_TIMEOUT_S, TimeUnit.SECONDS);
        awaitPartitionsReady(topic.name(), topic.numPartitions());
    }

    /**
     * Waits until partitions 0..n-1 of the topic serve ListOffsets at their leader (the consumer
     * retries NOT_LEADER_OR_FOLLOWER / UNKNOWN_TOPIC_OR_PARTITION internally until it times out).
     *
     * <p>Why: Apache Kafka acknowledges CreateTopics/CreatePartitions before the broker hosts the
     * new partitions. An idempotent producer that writes at once can have its first request
     * rejected with NOT_LEADER_OR_FOLLOWER while a later in-flight request (higher sequence) is
     * accepted by the broker, which has no producer state yet; the first request then fails with
     * OUT_OF_ORDER_SEQUENCE_NUMBER on every retry until delivery.timeout.ms (KAFKA-15591,
     * KAFKA-14359). Waiting here keeps the suite about the broker's steady-state behaviour.
     */
    static void awaitPartitionsReady(String topic, int n) {
        awaitPreferredLeaders(topic, n);
        try (KafkaConsumer<byte[], byte[]> c = consumer()) {
            c.endOffsets(partitions(topic, n), Duration.ofSeconds(OP_TIMEOUT_S));
        }
    }

    /** Bound for a new topic's partitions to be led by their preferred replicas. */
    static final Duration PREFERRED_LEADER_WAIT = Duration.ofSeconds(45);

    /**
     * Waits until each of the topic's n partitions has REPLICATION_FACTOR replicas and is led by
     * its preferred (first) replica. Kafka elects that one at creation; a Sluice cluster elects
     * any replica first and hands leadership over about ten election timeouts (~10 s) later.
     * Waiting keeps the suite about the steady state rather than that handover.
     */
    static void awaitPreferredLeaders(String topic, int n) {
        String[] last = {"nothing described yet"};
        try (Admin admin = admin()) {
            waitUntil("partitions of " + topic + " led by their preferred replicas", PREFERRED_LEADER_WAIT, () -> {
                try {
                    TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames()
                            .get(OP_TIMEOUT_S, TimeUnit.SECONDS).get(topic);
                    if (d.partitions().size() != n) {
                        last[0] = d.partitions().size() + " partitions";
                        return false;
                    }
                    for (TopicPartitionInfo p : d.partitions()) {
                        if (p.replicas().size() != REPLICATION_FACTOR || p.leader() == null
                                || p.leader().id() != p.replicas().get(0).id()) {
                            last[0] = "partition " + p.partition() + " leader " + p.leader() + " replicas " + p.replicas();
                            return false;
                        }
                    }
                    return true;
                } catch (Exception e) {
                    last[0] = e.toString();
                    return false;
                }
            });
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        } catch (AssertionError e) {
            throw new AssertionError(e.getMessage() + " (last: " + last[0] + ")", e);
        }
    }

    /**
     * From the consumer's current positions, reads until every partition in {@code until}
     * reaches its given end offset; fails after {@code timeout}. Then polls once more for a
     * short while and fails if anything beyond the end arrives.
     */
    static Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> readUntil(
            KafkaConsumer<byte[], byte[]> consumer, Map<TopicPartition, Long> until, Duration timeout) {
        Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> out = new HashMap<>();
        for (TopicPartition tp : until.keySet()) {
            out.put(tp, new ArrayList<>());
        }
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!reached(consumer, until)) {
            if (System.nanoTime() > deadline) {
                Map<TopicPartition, Long> pos = new HashMap<>();
                for (TopicPartition tp : until.keySet()) {
                    pos.put(tp, consumer.position(tp));
                }
                fail("timed out after " + timeout + " reading up to " + until + "; positions " + pos);
            }
            ConsumerRecords<byte[], byte[]> recs = consumer.poll(Duration.ofMillis(200));
            for (ConsumerRecord<byte[], byte[]> r : recs) {
                TopicPartition tp = new TopicPartition(r.topic(), r.partition());
                List<ConsumerRecord<byte[], byte[]>> l = out.get(tp);
                if (l == null) {
                    fail("record from an unexpected partition " + tp + " at offset " + r.offset());
                }
                l.add(r);
            }
        }
        ConsumerRecords<byte[], byte[]> extra = consumer.poll(Duration.ofMillis(500));
        assertEquals(0, extra.count(), () -> "records beyond the end offsets " + until + ": "
                + extra.count() + ", first at " + extra.iterator().next().partition() + "/"
                + extra.iterator().next().offset());
        return out;
    }

    private static boolean reached(KafkaConsumer<byte[], byte[]> consumer, Map<TopicPartition, Long> until) {
        for (Map.Entry<TopicPartition, Long> e : until.entrySet()) {
            if (consumer.position(e.getKey()) < e.getValue()) {
                return false;
            }
        }
        return true;
    }

    static Map<TopicPartition, Long> endOffsets(KafkaConsumer<byte[], byte[]> consumer,
                                                Collection<TopicPartition> tps) {
        return consumer.endOffsets(tps, Duration.ofSeconds(OP_TIMEOUT_S));
    }

    /** Polls {@code condition} every 100 ms until it holds; fails with {@code what} after {@code timeout}. */
    static void waitUntil(String what, Duration timeout, BooleanSupplier condition) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                fail("timed out after " + timeout + " waiting until " + what);
            }
            Thread.sleep(100);
        }
    }

    static List<TopicPartition> partitions(String topic, int n) {
        List<TopicPartition> l = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            l.add(new TopicPartition(topic, i));
        }
        return l;
    }
}
