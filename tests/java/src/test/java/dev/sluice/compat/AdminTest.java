package dev.sluice.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DeletedRecords;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.extension.ExtendWith;

/** Test 3: the AdminClient calls a Kafka operator and tools rely on. */
@ExtendWith(Broker.class)
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class AdminTest {

    private static final long T = Clients.OP_TIMEOUT_S;
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

    @Test
    void describeCluster() throws Exception {
        DescribeClusterResult r = admin.describeCluster();
        String clusterId = r.clusterId().get(T, TimeUnit.SECONDS);
        Collection<Node> nodes = r.nodes().get(T, TimeUnit.SECONDS);
        assertNotNull(clusterId, "cluster id");
        assertFalse(clusterId.isBlank(), "cluster id");
        assertFalse(nodes.isEmpty(), "describeCluster lists at least one broker");
        for (Node n : nodes) {
            assertTrue(n.id() >= 0, "node id " + n);
            assertFalse(n.host().isEmpty(), "node host " + n);
            assertTrue(n.port() > 0, "node port " + n);
        }
        String bootstrap = Broker.bootstrap();
        if (!bootstrap.contains(",")) {
            // One-node setups advertise the address we connected to.
            Set<String> addrs = nodes.stream().map(n -> n.host() + ":" + n.port()).collect(Collectors.toSet());
            assertTrue(addrs.contains(bootstrap), "advertised addresses " + addrs + " include " + bootstrap);
        }
    }

    @Test
    void topicLifecycle() throws Exception {
        String topic = Clients.uniqueTopic("compat-admin");
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Set<Integer> brokerIds = admin.describeCluster().nodes().get(T, TimeUnit.SECONDS)
                .stream().map(Node::id).collect(Collectors.toSet());

        // createTopics with configs
        NewTopic nt = new NewTopic(topic, 4, Clients.REPLICATION_FACTOR).configs(Map.of(
                "retention.ms", "3600000",
                "cleanup.policy", "delete",
                "segment.bytes", "16777216"));
        Clients.createTopic(admin, nt);

        // creating it again is TOPIC_ALREADY_EXISTS
        ExecutionException dup = assertThrows(ExecutionException.class,
                () -> admin.createTopics(List.of(new NewTopic(topic, 4, Clients.REPLICATION_FACTOR))).all().get(T, TimeUnit.SECONDS));
        assertInstanceOf(TopicExistsException.class, dup.getCause(), "second createTopics");

        // listTopics
        Set<String> names = admin.listTopics().names().get(T, TimeUnit.SECONDS);
        assertTrue(names.contains(topic), "listTopics contains " + topic);

        // describeTopics: 4 partitions, each with a live leader among the cluster's brokers
        TopicDescription d = describe(topic);
        assertEquals(topic, d.name());
        assertFalse(d.isInternal());
        assertNotNull(d.topicId(), "topic id");
        assertEquals(4, d.partitions().size(), "partition count");
        for (int i = 0; i < 4; i++) {
            TopicPartitionInfo p = d.partitions().get(i);
            assertEquals(i, p.partition());
            assertNotNull(p.leader(), "leader of partition " + i);
            assertTrue(brokerIds.contains(p.leader().id()), "leader " + p.leader() + " is a known broker " + brokerIds);
            assertEquals(Clients.REPLICATION_FACTOR, p.replicas().size(), "replicas of partition " + i + ": " + p.replicas());
            assertFalse(p.isr().isEmpty(), "isr of partition " + i);
        }

        // describeConfigs shows the topic overrides
        Config cfg = admin.describeConfigs(List.of(res)).all().get(T, TimeUnit.SECONDS).get(res);
        ConfigEntry retention = cfg.get("retention.ms");
        assertNotNull(retention, "retention.ms is described");
        assertEquals("3600000", retention.value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, retention.source(), "retention.ms source");
        assertEquals("delete", cfg.get("cleanup.policy").value());
        assertEquals("16777216", cfg.get("segment.bytes").value());

        // incrementalAlterConfigs, then read it back
        admin.incrementalAlterConfigs(Map.of(res, List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", "7200000"), AlterConfigOp.OpType.SET))))
                .all().get(T, TimeUnit.SECONDS);
        Clients.waitUntil("retention.ms reads back as 7200000", Duration.ofSeconds(15),
                () -> "7200000".equals(configValue(res, "retention.ms")));

        // createPartitions 4 -> 6
        admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(6))).all().get(T, TimeUnit.SECONDS);
        Clients.waitUntil("describeTopics shows 6 partitions", Duration.ofSeconds(15),
                () -> describeQuietly(topic) == 6);
        Clients.awaitPartitionsReady(topic, 6);
        TopicDescription d6 = describe(topic);
        for (TopicPartitionInfo p : d6.partitions()) {
            assertNotNull(p.leader(), "leader of partition " + p.partition() + " after createPartitions");
        }

        // The new partitions take writes too; then deleteRecords on partition 0.
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p5 = new TopicPartition(topic, 5);
        try (KafkaProducer<byte[], byte[]> producer = Clients.producer(Map.of())) {
            for (int i = 0; i < 50; i++) {
                byte[] v = ("admin-" + i).getBytes(StandardCharsets.UTF_8);
                producer.send(new ProducerRecord<>(topic, 0, null, v));
                producer.send(new ProducerRecord<>(topic, 5, null, v));
            }
            producer.flush();
        }
        DeletedRecords dr = admin.deleteRecords(Map.of(p0, RecordsToDelete.beforeOffset(20)))
                .lowWatermarks().get(p0).get(T, TimeUnit.SECONDS);
        assertEquals(20L, dr.lowWatermark(), "low watermark after deleteRecords");
        try (KafkaConsumer<byte[], byte[]> consumer = Clients.consumer()) {
            Map<TopicPartition, Long> begins = consumer.beginningOffsets(List.of(p0, p5), Duration.ofSeconds(T));
            Map<TopicPartition, Long> ends = consumer.endOffsets(List.of(p0, p5), Duration.ofSeconds(T));
            assertEquals(20L, begins.get(p0), "beginning offset of " + p0 + " after deleteRecords");
            assertEquals(0L, begins.get(p5), "beginning offset of " + p5);
            assertEquals(50L, ends.get(p0), "end offset of " + p0);
            assertEquals(50L, ends.get(p5), "end offset of " + p5);
            consumer.assign(List.of(p0));
            consumer.seekToBeginning(List.of(p0));
            List<ConsumerRecord<byte[], byte[]>> got =
                    Clients.readUntil(consumer, Map.of(p0, 50L), Duration.ofSeconds(30)).get(p0);
            assertEquals(30, got.size(), "records left in " + p0);
            assertEquals(20L, got.get(0).offset(), "first offset left in " + p0);
            assertEquals("admin-20", new String(got.get(0).value(), StandardCharsets.UTF_8));
        }

        // deleteTopics, then it is gone
        admin.deleteTopics(List.of(topic)).all().get(T, TimeUnit.SECONDS);
        Clients.waitUntil("listTopics no longer shows " + topic, Duration.ofSeconds(20), () -> {
            try {
                return !admin.listTopics().names().get(T, TimeUnit.SECONDS).contains(topic);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        ExecutionException gone = assertThrows(ExecutionException.class,
                () -> admin.describeTopics(List.of(topic)).allTopicNames().get(T, TimeUnit.SECONDS));
        assertInstanceOf(UnknownTopicOrPartitionException.class, gone.getCause(), "describeTopics after delete");
    }

    private TopicDescription describe(String topic) throws Exception {
        return admin.describeTopics(List.of(topic)).allTopicNames().get(T, TimeUnit.SECONDS).get(topic);
    }

    private int describeQuietly(String topic) {
        try {
            return describe(topic).partitions().size();
        } catch (Exception e) {
            return -1;
        }
    }

    private String configValue(ConfigResource res, String name) {
        try {
            ConfigEntry e = admin.describeConfigs(List.of(res)).all().get(T, TimeUnit.SECONDS).get(res).get(name);
            return e == null ? null : e.value();
        } catch (Exception e) {
            return null;
        }
    }
}
