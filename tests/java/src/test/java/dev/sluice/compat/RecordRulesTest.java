package dev.sluice.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.InvalidRecordException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.TopicConfig;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.extension.ExtendWith;

/** Kafka's record rules through the Java producer: keys are required on compacted topics. */
@ExtendWith(Broker.class)
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class RecordRulesTest {

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
    void keylessRecordToCompactedTopicIsInvalidRecord() throws Exception {
        String topic = Clients.uniqueTopic("compat-compact-keys");
        Clients.createTopic(admin, new NewTopic(topic, 1, Clients.REPLICATION_FACTOR)
                .configs(Map.of(TopicConfig.CLEANUP_POLICY_CONFIG, TopicConfig.CLEANUP_POLICY_COMPACT)));
        byte[] value = "no key".getBytes(StandardCharsets.UTF_8);
        try (KafkaProducer<byte[], byte[]> producer = Clients.producer(Map.of(
                ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "20000",
                ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000"))) {
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> producer.send(new ProducerRecord<>(topic, 0, null, value))
                            .get(Clients.OP_TIMEOUT_S, TimeUnit.SECONDS));
            assertInstanceOf(InvalidRecordException.class, e.getCause(), "cause: " + e.getCause());
            // A keyed record to the same topic is stored: only the rule failed.
            RecordMetadata md = producer.send(new ProducerRecord<>(topic, 0,
                    "k".getBytes(StandardCharsets.UTF_8), value))
                    .get(Clients.OP_TIMEOUT_S, TimeUnit.SECONDS);
            assertEquals(0, md.offset());
        }
        try (var consumer = Clients.consumer()) {
            TopicPartition tp = new TopicPartition(topic, 0);
            assertEquals(Map.of(tp, 1L), Clients.endOffsets(consumer, List.of(tp)));
        }
    }
}
