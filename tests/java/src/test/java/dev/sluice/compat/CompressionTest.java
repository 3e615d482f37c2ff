package dev.sluice.compat;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Test 4: compressed batches (gzip, snappy, lz4, zstd) round-trip through the broker. */
@ExtendWith(Broker.class)
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class CompressionTest {

    private static final int MESSAGES = 1_000;
    private static final int PARTITIONS = 2;
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

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"gzip", "snappy", "lz4", "zstd"})
    void compressedRoundTrip(String codec) throws Exception {
        String topic = Clients.uniqueTopic("compat-" + codec);
        Clients.createTopic(admin, new NewTopic(topic, PARTITIONS, Clients.REPLICATION_FACTOR));
        List<TopicPartition> tps = Clients.partitions(topic, PARTITIONS);

        Random rnd = new Random(codec.hashCode());
        List<List<byte[][]>> sent = new ArrayList<>();
        for (int p = 0; p < PARTITIONS; p++) {
            sent.add(new ArrayList<>());
        }
        List<Future<RecordMetadata>> futures = new ArrayList<>();
        double compressionRate;
        try (KafkaProducer<byte[], byte[]> producer = Clients.producer(Map.of(
                ProducerConfig.COMPRESSION_TYPE_CONFIG, codec,
                ProducerConfig.LINGER_MS_CONFIG, "20",
                ProducerConfig.BATCH_SIZE_CONFIG, "65536"))) {
            for (int i = 0; i < MESSAGES; i++) {
                int p = i % PARTITIONS;
                byte[] key = ("k" + i).getBytes(StandardCharsets.UTF_8);
                // Compressible text with a random tail, so every batch really shrinks.
                StringBuilder sb = new StringBuilder();
                sb.append(codec).append(" message ").append(i).append(' ');
                sb.append("lorem ipsum dolor sit amet ".repeat(1 + rnd.nextInt(20)));
                for (int j = rnd.nextInt(16); j > 0; j--) {
                    sb.append((char) ('a' + rnd.nextInt(26)));
                }
                byte[] value = sb.toString().getBytes(StandardCharsets.UTF_8);
                RecordHeaders headers = new RecordHeaders();
                headers.add("codec", codec.getBytes(StandardCharsets.UTF_8));
                futures.add(producer.send(new ProducerRecord<>(topic, p, key, value, headers)));
                sent.get(p).add(new byte[][] {key, value});
            }
            producer.flush();
            for (Future<RecordMetadata> f : futures) {
                f.get(Clients.OP_TIMEOUT_S, TimeUnit.SECONDS);
            }
            compressionRate = metric(producer.metrics(), "compression-rate-avg");
        }
        assertTrue(compressionRate > 0 && compressionRate < 0.8,
                "producer reports its " + codec + " batches compressed (compression-rate-avg " + compressionRate + ")");

        try (KafkaConsumer<byte[], byte[]> consumer = Clients.consumer()) {
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<TopicPartition, Long> ends = Clients.endOffsets(consumer, tps);
            for (TopicPartition tp : tps) {
                assertEquals((long) sent.get(tp.partition()).size(), ends.get(tp), "end offset of " + tp);
            }
            Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> got =
                    Clients.readUntil(consumer, ends, Duration.ofSeconds(60));
            for (TopicPartition tp : tps) {
                List<byte[][]> exp = sent.get(tp.partition());
                List<ConsumerRecord<byte[], byte[]>> l = got.get(tp);
                assertEquals(exp.size(), l.size(), "records read from " + tp);
                for (int i = 0; i < exp.size(); i++) {
                    ConsumerRecord<byte[], byte[]> r = l.get(i);
                    assertEquals(i, r.offset(), "offset in " + tp);
                    assertArrayEquals(exp.get(i)[0], r.key(), "key at " + tp + "@" + i);
                    assertArrayEquals(exp.get(i)[1], r.value(), "value at " + tp + "@" + i);
                    assertNotNull(r.headers().lastHeader("codec"), "header at " + tp + "@" + i);
                    assertEquals(codec, new String(r.headers().lastHeader("codec").value(), StandardCharsets.UTF_8));
                }
            }
        }
    }

    private static double metric(Map<MetricName, ? extends Metric> metrics, String name) {
        for (Map.Entry<MetricName, ? extends Metric> e : metrics.entrySet()) {
            if (e.getKey().name().equals(name) && "producer-metrics".equals(e.getKey().group())) {
                return ((Number) e.getValue().metricValue()).doubleValue();
            }
        }
        throw new AssertionError("producer metric " + name + " not found");
    }
}
