package dev.sluice.compat;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * Tests 1 and 2: a default (idempotent, acks=all) producer writes 10,000 keyed records with
 * headers and explicit timestamps to 4 partitions; a group-less consumer reads them back,
 * replays them, and looks offsets up by time.
 */
@ExtendWith(Broker.class)
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class ProduceConsumeTest {

    private static final int PARTITIONS = 4;
    private static final int MESSAGES = 10_000;

    /** What was sent, as the producer acknowledged it. */
    record Sent(int index, int partition, long offset, byte[] key, byte[] value, Header[] headers, long timestamp) {
    }

    private String topic;
    private List<TopicPartition> tps;
    private final Map<Integer, List<Sent>> sentByPartition = new HashMap<>();
    private Admin admin;

    @BeforeAll
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void produce() throws Exception {
        admin = Clients.admin();
        topic = Clients.uniqueTopic("compat-pc");
        tps = Clients.partitions(topic, PARTITIONS);
        Clients.createTopic(admin, new NewTopic(topic, PARTITIONS, Clients.REPLICATION_FACTOR));

        Random rnd = new Random(42);
        // Explicit timestamps, strictly increasing by send order, 10 minutes in the past.
        long base = System.currentTimeMillis() - 600_000L;
        List<Future<RecordMetadata>> futures = new ArrayList<>(MESSAGES);
        List<Sent> pending = new ArrayList<>(MESSAGES);
        try (KafkaProducer<byte[], byte[]> producer = Clients.producer(Map.of())) {
            for (int i = 0; i < MESSAGES; i++) {
                byte[] key = ("key-" + i).getBytes(StandardCharsets.UTF_8);
                byte[] value = new byte[rnd.nextInt(300)];
                rnd.nextBytes(value);
                byte[] seq = Integer.toString(i).getBytes(StandardCharsets.UTF_8);
                // Second header: empty for some records, null for some, random bytes otherwise.
                byte[] tag;
                if (i % 13 == 0) {
                    tag = null;
                } else if (i % 7 == 0) {
                    tag = new byte[0];
                } else {
                    tag = new byte[1 + rnd.nextInt(20)];
                    rnd.nextBytes(tag);
                }
                Header[] headers = {new RecordHeader("seq", seq), new RecordHeader("tag", tag)};
                long ts = base + 3L * i;
                ProducerRecord<byte[], byte[]> rec =
                        new ProducerRecord<>(topic, null, ts, key, value, new RecordHeaders(headers));
                futures.add(producer.send(rec));
                pending.add(new Sent(i, -1, -1, key, value, headers, ts));
            }
            producer.flush();
        }
        for (int i = 0; i < MESSAGES; i++) {
            RecordMetadata md = futures.get(i).get(Clients.OP_TIMEOUT_S, TimeUnit.SECONDS);
            Sent s = pending.get(i);
            assertEquals(s.timestamp(), md.timestamp(), "acknowledged timestamp of record " + i);
            sentByPartition.computeIfAbsent(md.partition(), p -> new ArrayList<>())
                    .add(new Sent(i, md.partition(), md.offset(), s.key(), s.value(), s.headers(), s.timestamp()));
        }
    }

    @AfterAll
    void cleanup() {
        if (admin != null) {
            admin.close(Duration.ofSeconds(10));
        }
    }

    @Test
    @Order(1)
    void idempotentProducerAcknowledgesContiguousOffsetsInSendOrder() {
        assertEquals(PARTITIONS, sentByPartition.size(), "10,000 distinct keys should reach all 4 partitions");
        int total = 0;
        for (Map.Entry<Integer, List<Sent>> e : sentByPartition.entrySet()) {
            List<Sent> l = e.getValue();
            for (int i = 0; i < l.size(); i++) {
                assertEquals(i, l.get(i).offset(), "acknowledged offset in partition " + e.getKey());
            }
            total += l.size();
        }
        assertEquals(MESSAGES, total);
    }

    @Test
    @Order(2)
    void consumerReadsEverythingBackIntact() {
        try (KafkaConsumer<byte[], byte[]> consumer = Clients.consumer()) {
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<TopicPartition, Long> ends = Clients.endOffsets(consumer, tps);
            for (TopicPartition tp : tps) {
                assertEquals((long) expected(tp).size(), ends.get(tp), "end offset of " + tp);
            }
            Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> got =
                    Clients.readUntil(consumer, ends, Duration.ofSeconds(60));
            for (TopicPartition tp : tps) {
                assertRecordsMatch(tp, expected(tp), got.get(tp));
            }
        }
    }

    @Test
    @Order(3)
    void replayFromOffsetZero() {
        try (KafkaConsumer<byte[], byte[]> consumer = Clients.consumer()) {
            consumer.assign(tps);
            Map<TopicPartition, Long> ends = Clients.endOffsets(consumer, tps);
            for (int round = 0; round < 2; round++) {
                for (TopicPartition tp : tps) {
                    consumer.seek(tp, 0);
                }
                Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> got =
                        Clients.readUntil(consumer, ends, Duration.ofSeconds(60));
                for (TopicPartition tp : tps) {
                    assertRecordsMatch(tp, expected(tp), got.get(tp));
                }
            }
            // And from the middle of one partition.
            TopicPartition tp = tps.get(0);
            List<Sent> exp = expected(tp);
            int mid = exp.size() / 2;
            consumer.assign(List.of(tp));
            consumer.seek(tp, mid);
            Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> got =
                    Clients.readUntil(consumer, Map.of(tp, (long) exp.size()), Duration.ofSeconds(30));
            assertRecordsMatch(tp, exp.subList(mid, exp.size()), got.get(tp));
        }
    }

    @Test
    @Order(4)
    void beginningAndEndOffsets() {
        try (KafkaConsumer<byte[], byte[]> consumer = Clients.consumer()) {
            Map<TopicPartition, Long> begins = consumer.beginningOffsets(tps, Duration.ofSeconds(Clients.OP_TIMEOUT_S));
            Map<TopicPartition, Long> ends = consumer.endOffsets(tps, Duration.ofSeconds(Clients.OP_TIMEOUT_S));
            for (TopicPartition tp : tps) {
                assertEquals(0L, begins.get(tp), "beginning offset of " + tp);
                assertEquals((long) expected(tp).size(), ends.get(tp), "end offset of " + tp);
            }
        }
    }

    @Test
    @Order(5)
    void offsetsForTimes() {
        try (KafkaConsumer<byte[], byte[]> consumer = Clients.consumer()) {
            for (TopicPartition tp : tps) {
                consumer.assign(List.of(tp));
                List<Sent> exp = expected(tp);
                int mid = exp.size() / 2;
                // Exactly a record's timestamp, and one just after the previous record's.
                long[] queries = {exp.get(mid).timestamp(), exp.get(mid - 1).timestamp() + 1};
                for (long t : queries) {
                    OffsetAndTimestamp oat = consumer.offsetsForTimes(Map.of(tp, t),
                            Duration.ofSeconds(Clients.OP_TIMEOUT_S)).get(tp);
                    assertNotNull(oat, "offsetsForTimes(" + t + ") on " + tp);
                    assertEquals(mid, oat.offset(), "offsetsForTimes(" + t + ") on " + tp);
                    assertEquals(exp.get(mid).timestamp(), oat.timestamp(), "timestamp returned for " + tp);

                    consumer.seek(tp, oat.offset());
                    ConsumerRecord<byte[], byte[]> first = firstRecord(consumer, tp);
                    assertEquals(oat.offset(), first.offset());
                    assertTrue(first.timestamp() >= t, "record at the looked-up offset has timestamp >= " + t);
                    if (oat.offset() > 0) {
                        consumer.seek(tp, oat.offset() - 1);
                        ConsumerRecord<byte[], byte[]> prev = firstRecord(consumer, tp);
                        assertEquals(oat.offset() - 1, prev.offset());
                        assertTrue(prev.timestamp() < t, "record before the looked-up offset has timestamp < " + t);
                    }
                }
                // Before everything: the first record. After everything: no answer.
                OffsetAndTimestamp early = consumer.offsetsForTimes(Map.of(tp, 0L),
                        Duration.ofSeconds(Clients.OP_TIMEOUT_S)).get(tp);
                assertNotNull(early, "offsetsForTimes(0) on " + tp);
                assertEquals(0L, early.offset());
                long afterLast = exp.get(exp.size() - 1).timestamp() + 1;
                Map<TopicPartition, OffsetAndTimestamp> late = consumer.offsetsForTimes(Map.of(tp, afterLast),
                        Duration.ofSeconds(Clients.OP_TIMEOUT_S));
                assertNull(late.get(tp), "offsetsForTimes after the last timestamp on " + tp);
            }
        }
    }

    private List<Sent> expected(TopicPartition tp) {
        return sentByPartition.getOrDefault(tp.partition(), List.of());
    }

    private static ConsumerRecord<byte[], byte[]> firstRecord(KafkaConsumer<byte[], byte[]> consumer,
                                                              TopicPartition tp) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (System.nanoTime() < deadline) {
            ConsumerRecords<byte[], byte[]> recs = consumer.poll(Duration.ofMillis(200));
            List<ConsumerRecord<byte[], byte[]>> l = recs.records(tp);
            if (!l.isEmpty()) {
                return l.get(0);
            }
        }
        throw new AssertionError("no record from " + tp + " within 30 s");
    }

    static void assertRecordsMatch(TopicPartition tp, List<Sent> exp, List<ConsumerRecord<byte[], byte[]>> got) {
        assertEquals(exp.size(), got.size(), "number of records read from " + tp);
        for (int i = 0; i < exp.size(); i++) {
            Sent s = exp.get(i);
            ConsumerRecord<byte[], byte[]> r = got.get(i);
            String at = tp + " offset " + s.offset() + " (record " + s.index() + ")";
            assertEquals(s.offset(), r.offset(), "offset at " + at);
            assertArrayEquals(s.key(), r.key(), "key at " + at);
            assertArrayEquals(s.value(), r.value(), "value at " + at);
            assertEquals(s.timestamp(), r.timestamp(), "timestamp at " + at);
            assertEquals(TimestampType.CREATE_TIME, r.timestampType(), "timestamp type at " + at);
            Header[] h = r.headers().toArray();
            assertEquals(s.headers().length, h.length, "header count at " + at);
            for (int j = 0; j < h.length; j++) {
                assertEquals(s.headers()[j].key(), h[j].key(), "header key at " + at);
                assertArrayEquals(s.headers()[j].value(), h[j].value(), "header value at " + at);
            }
        }
    }
}
