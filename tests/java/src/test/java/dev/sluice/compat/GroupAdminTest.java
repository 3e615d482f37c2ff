package dev.sluice.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsSpec;
import org.apache.kafka.clients.admin.ListGroupsOptions;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.GroupSubscribedToTopicException;
import org.apache.kafka.common.errors.UnknownMemberIdException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * AdminClient consumer-group operations: list (with a state filter), describe (members,
 * assignments, state), committed offsets and lag, altering offsets (reset to earliest, then a
 * consumer replays everything), deleting offsets and deleting groups, with Kafka's errors for
 * the operations an active group refuses.
 */
@ExtendWith(Broker.class)
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class GroupAdminTest {

    private static final long T = Clients.OP_TIMEOUT_S;
    private static final Duration REBALANCE = Duration.ofSeconds(60);
    /** Records per partition: partition p holds 100 * (p + 1). */
    private static final int PARTITIONS = 3;

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
    void listDescribeOffsetsAndLag() throws Exception {
        String topic = Clients.uniqueTopic("compat-gadmin");
        String group = Clients.uniqueTopic("compat-gadmin-g");
        String other = Clients.uniqueTopic("compat-gadmin-other");
        createAndFill(topic);
        List<TopicPartition> tps = Clients.partitions(topic, PARTITIONS);

        // A group with committed offsets and no members, made by the AdminClient alone.
        admin.alterConsumerGroupOffsets(other, Map.of(tps.get(2), new OffsetAndMetadata(7, "other-meta")))
                .all().get(T, TimeUnit.SECONDS);

        try (KafkaConsumer<byte[], byte[]> c = GroupConsumerTest.consumer(group, null,
                Map.of(ConsumerConfig.CLIENT_ID_CONFIG, "gadmin-client"))) {
            c.subscribe(List.of(topic));
            long deadline = System.nanoTime() + REBALANCE.toNanos();
            while (c.assignment().size() < PARTITIONS) {
                if (System.nanoTime() > deadline) {
                    fail("the consumer was not assigned all partitions within " + REBALANCE + ": " + c.assignment());
                }
                c.poll(Duration.ofMillis(100));
            }
            c.commitSync(Map.of(
                    tps.get(0), new OffsetAndMetadata(50, "meta-0"),
                    tps.get(1), new OffsetAndMetadata(200, ""),
                    tps.get(2), new OffsetAndMetadata(10)), Duration.ofSeconds(T));

            // ListGroups, unfiltered and with a state filter.
            GroupListing listed = listGroups(ListGroupsOptions.forConsumerGroups()).get(group);
            assertNotNull(listed, "listGroups shows " + group);
            assertEquals("consumer", listed.protocol(), "protocol type of " + listed);
            assertEquals(Optional.of(GroupState.STABLE), listed.groupState(), "state of " + listed);
            assertFalse(listed.isSimpleConsumerGroup(), "a subscribing group is not a simple group: " + listed);
            listed.type().ifPresent(t -> assertEquals(GroupType.CLASSIC, t, "type of " + listed));
            Map<String, GroupListing> stable = listGroups(
                    ListGroupsOptions.forConsumerGroups().inGroupStates(Set.of(GroupState.STABLE)));
            assertTrue(stable.containsKey(group), "STABLE filter includes " + group + ": " + stable.keySet());
            assertFalse(stable.containsKey(other), "STABLE filter excludes the empty " + other);
            Map<String, GroupListing> empty = listGroups(
                    ListGroupsOptions.forConsumerGroups().inGroupStates(Set.of(GroupState.EMPTY)));
            assertTrue(empty.containsKey(other), "EMPTY filter includes " + other + ": " + empty.keySet());
            assertFalse(empty.containsKey(group), "EMPTY filter excludes the stable " + group);
            assertTrue(empty.get(other).isSimpleConsumerGroup(), "a group with only offsets is a simple group: "
                    + empty.get(other));

            // DescribeGroups: state, member, its assignment, the assignor.
            ConsumerGroupDescription d = describe(group);
            assertEquals(GroupState.STABLE, d.groupState(), "state: " + d);
            assertEquals(GroupType.CLASSIC, d.type(), "type: " + d);
            assertEquals("cooperative-sticky", d.partitionAssignor(), "assignor: " + d);
            assertFalse(d.isSimpleConsumerGroup(), "simple: " + d);
            assertNotNull(d.coordinator(), "coordinator: " + d);
            assertEquals(1, d.members().size(), "members: " + d);
            MemberDescription m = d.members().iterator().next();
            assertEquals("gadmin-client", m.clientId(), "client id: " + m);
            assertFalse(m.consumerId().isEmpty(), "member id: " + m);
            assertFalse(m.host().isEmpty(), "host: " + m);
            assertEquals(Optional.empty(), m.groupInstanceId(), "instance id: " + m);
            assertEquals(Set.copyOf(tps), m.assignment().topicPartitions(), "assignment: " + m);

            // Committed offsets (with metadata) and lag against ListOffsets latest.
            Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets(group)
                    .partitionsToOffsetAndMetadata().get(T, TimeUnit.SECONDS);
            assertEquals(Map.of(tps.get(0), 50L, tps.get(1), 200L, tps.get(2), 10L), offsets(committed),
                    "committed offsets");
            assertEquals("meta-0", committed.get(tps.get(0)).metadata(), "commit metadata round-trips");
            Map<TopicPartition, Long> latest = listOffsets(tps, OffsetSpec.latest());
            assertEquals(Map.of(tps.get(0), 100L, tps.get(1), 200L, tps.get(2), 300L), latest, "latest offsets");
            Map<TopicPartition, Long> lag = new HashMap<>();
            committed.forEach((tp, om) -> lag.put(tp, latest.get(tp) - om.offset()));
            assertEquals(Map.of(tps.get(0), 50L, tps.get(1), 0L, tps.get(2), 290L), lag, "lag");

            // Several groups in one OffsetFetch (v8+), one of them restricted to a partition.
            Map<String, Map<TopicPartition, OffsetAndMetadata>> both = admin.listConsumerGroupOffsets(Map.of(
                            group, new ListConsumerGroupOffsetsSpec(),
                            other, new ListConsumerGroupOffsetsSpec().topicPartitions(List.of(tps.get(2)))))
                    .all().get(T, TimeUnit.SECONDS);
            assertEquals(offsets(committed), offsets(both.get(group)), "multi-group fetch, " + group);
            assertEquals(Map.of(tps.get(2), 7L), offsets(both.get(other)), "multi-group fetch, " + other);
            assertEquals("other-meta", both.get(other).get(tps.get(2)).metadata(), "metadata of " + other);

            // An active group may drop offsets of a topic it is not subscribed to (Kafka checks
            // the members' subscriptions, not just whether the group has members).
            String unsubscribed = topic + "-unsubscribed";
            admin.createTopics(List.of(new NewTopic(unsubscribed, 1, Clients.REPLICATION_FACTOR))).all().get(T, TimeUnit.SECONDS);
            TopicPartition unsubscribedTp = new TopicPartition(unsubscribed, 0);
            c.commitSync(Map.of(unsubscribedTp, new OffsetAndMetadata(0)), Duration.ofSeconds(T));
            assertTrue(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(T, TimeUnit.SECONDS)
                    .containsKey(unsubscribedTp), "commit of an unsubscribed topic's partition");
            admin.deleteConsumerGroupOffsets(group, Set.of(unsubscribedTp)).all().get(T, TimeUnit.SECONDS);

            // What an active group refuses.
            assertCause(UnknownMemberIdException.class, () -> admin.alterConsumerGroupOffsets(group,
                    Map.of(tps.get(0), new OffsetAndMetadata(0))).all().get(T, TimeUnit.SECONDS),
                    "alterConsumerGroupOffsets on an active group");
            assertCause(GroupNotEmptyException.class, () -> admin.deleteConsumerGroups(List.of(group))
                    .all().get(T, TimeUnit.SECONDS), "deleteConsumerGroups on an active group");
            assertCause(GroupSubscribedToTopicException.class, () -> admin.deleteConsumerGroupOffsets(group,
                    Set.of(tps.get(0))).all().get(T, TimeUnit.SECONDS),
                    "deleteConsumerGroupOffsets of a subscribed topic");
            assertEquals(Map.of(tps.get(0), 50L, tps.get(1), 200L, tps.get(2), 10L),
                    offsets(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(T, TimeUnit.SECONDS)),
                    "refused operations changed nothing");
        }

        // The consumer left on close: the group is empty and keeps its offsets.
        ConsumerGroupDescription d = describe(group);
        assertEquals(GroupState.EMPTY, d.groupState(), "state after the member left: " + d);
        assertEquals(0, d.members().size(), "members after the member left: " + d);
        Map<String, GroupListing> empty = listGroups(
                ListGroupsOptions.forConsumerGroups().inGroupStates(Set.of(GroupState.EMPTY)));
        assertTrue(empty.containsKey(group), "EMPTY filter includes " + group + " after its member left");
        assertEquals(Map.of(tps.get(0), 50L, tps.get(1), 200L, tps.get(2), 10L),
                offsets(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(T, TimeUnit.SECONDS)),
                "an empty group keeps its offsets");
        admin.deleteConsumerGroups(List.of(group, other)).all().get(T, TimeUnit.SECONDS);
    }

    @Test
    void resetToEarliestReplayThenDeleteOffsetsAndGroup() throws Exception {
        String topic = Clients.uniqueTopic("compat-greset");
        String group = Clients.uniqueTopic("compat-greset-g");
        createAndFill(topic);
        List<TopicPartition> tps = Clients.partitions(topic, PARTITIONS);
        Map<TopicPartition, Long> end = listOffsets(tps, OffsetSpec.latest());

        // Consume everything and commit: no lag.
        Map<TopicPartition, Long> firstRead = consumeAll(group, end, "earliest");
        assertEquals(Map.of(tps.get(0), 0L, tps.get(1), 0L, tps.get(2), 0L), firstRead, "first offsets read");
        assertEquals(end, committed(group), "committed after the first pass");

        // Reset the (empty) group to the earliest offsets.
        Map<TopicPartition, Long> earliest = listOffsets(tps, OffsetSpec.earliest());
        Map<TopicPartition, OffsetAndMetadata> reset = new HashMap<>();
        earliest.forEach((tp, o) -> reset.put(tp, new OffsetAndMetadata(o)));
        admin.alterConsumerGroupOffsets(group, reset).all().get(T, TimeUnit.SECONDS);
        assertEquals(earliest, committed(group), "committed after the reset");

        // A new member replays everything from the reset offsets (auto.offset.reset=none, so
        // it can only start from what the group committed).
        Map<TopicPartition, Long> replayStart = consumeAll(group, end, "none");
        assertEquals(earliest, replayStart, "the replay starts at the reset offsets");
        assertEquals(end, committed(group), "committed after the replay");

        // OffsetDelete on the empty group.
        admin.deleteConsumerGroupOffsets(group, Set.of(tps.get(0))).all().get(T, TimeUnit.SECONDS);
        Map<TopicPartition, Long> afterDelete = committed(group);
        assertEquals(Map.of(tps.get(1), end.get(tps.get(1)), tps.get(2), end.get(tps.get(2))), afterDelete,
                "offsets after deleting partition 0's");

        // DeleteGroups: gone from the listing, the describe and the offsets.
        admin.deleteConsumerGroups(List.of(group)).all().get(T, TimeUnit.SECONDS);
        Map<String, GroupListing> all = listGroups(ListGroupsOptions.forConsumerGroups());
        assertFalse(all.containsKey(group), "listGroups after delete: " + all.get(group));
        assertEquals(Map.of(), committed(group), "offsets after delete");
        try {
            ConsumerGroupDescription d = describe(group);
            assertEquals(GroupState.DEAD, d.groupState(), "a deleted group describes as DEAD: " + d);
            assertEquals(0, d.members().size(), "members of a deleted group: " + d);
        } catch (ExecutionException e) {
            assertInstanceOf(GroupIdNotFoundException.class, e.getCause(), "describe of a deleted group");
        }
        assertCause(GroupIdNotFoundException.class, () -> admin.deleteConsumerGroups(List.of(group))
                .all().get(T, TimeUnit.SECONDS), "deleting a deleted group");
    }

    // ------------------------------------------------------------------ helpers

    /** Creates the topic with PARTITIONS partitions; partition p gets 100 * (p + 1) records. */
    private void createAndFill(String topic) throws Exception {
        Clients.createTopic(admin, new NewTopic(topic, PARTITIONS, Clients.REPLICATION_FACTOR));
        try (KafkaProducer<byte[], byte[]> p = Clients.producer(Map.of())) {
            for (int part = 0; part < PARTITIONS; part++) {
                for (int i = 0; i < 100 * (part + 1); i++) {
                    p.send(new ProducerRecord<>(topic, part, null, ("v-" + part + "-" + i).getBytes(StandardCharsets.UTF_8)));
                }
            }
            p.flush();
        }
    }

    /**
     * Joins the group with the given auto.offset.reset, reads until every partition reaches
     * {@code end}, commits, and leaves; returns the first offset read per partition.
     */
    private Map<TopicPartition, Long> consumeAll(String group, Map<TopicPartition, Long> end, String reset) throws Exception {
        Map<TopicPartition, Long> first = new HashMap<>();
        Map<TopicPartition, Long> next = new HashMap<>();
        try (KafkaConsumer<byte[], byte[]> c = GroupConsumerTest.consumer(group, null,
                Map.of(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, reset))) {
            String topic = end.keySet().iterator().next().topic();
            c.subscribe(List.of(topic));
            long deadline = System.nanoTime() + REBALANCE.toNanos();
            while (!reached(next, end)) {
                if (System.nanoTime() > deadline) {
                    fail("did not read up to " + end + " within " + REBALANCE + "; next offsets " + next);
                }
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(100))) {
                    TopicPartition tp = new TopicPartition(r.topic(), r.partition());
                    first.putIfAbsent(tp, r.offset());
                    Long expected = next.get(tp);
                    if (expected != null) {
                        assertEquals(expected.longValue(), r.offset(), "offsets read in order on " + tp);
                    }
                    assertEquals("v-" + r.partition() + "-" + r.offset(), new String(r.value(), StandardCharsets.UTF_8),
                            "record at " + tp + "@" + r.offset());
                    next.put(tp, r.offset() + 1);
                }
            }
            Map<TopicPartition, OffsetAndMetadata> commit = new HashMap<>();
            next.forEach((tp, o) -> commit.put(tp, new OffsetAndMetadata(o)));
            c.commitSync(commit, Duration.ofSeconds(T));
        }
        return first;
    }

    private static boolean reached(Map<TopicPartition, Long> next, Map<TopicPartition, Long> end) {
        for (Map.Entry<TopicPartition, Long> e : end.entrySet()) {
            if (next.getOrDefault(e.getKey(), -1L) < e.getValue()) {
                return false;
            }
        }
        return true;
    }

    private Map<String, GroupListing> listGroups(ListGroupsOptions options) throws Exception {
        Collection<GroupListing> l = admin.listGroups(options).all().get(T, TimeUnit.SECONDS);
        return l.stream().collect(Collectors.toMap(GroupListing::groupId, g -> g, (x, y) -> x));
    }

    private ConsumerGroupDescription describe(String group) throws Exception {
        return admin.describeConsumerGroups(List.of(group)).describedGroups().get(group).get(T, TimeUnit.SECONDS);
    }

    private Map<TopicPartition, Long> committed(String group) throws Exception {
        return offsets(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(T, TimeUnit.SECONDS));
    }

    private Map<TopicPartition, Long> listOffsets(List<TopicPartition> tps, OffsetSpec spec) throws Exception {
        Map<TopicPartition, OffsetSpec> req = new HashMap<>();
        tps.forEach(tp -> req.put(tp, spec));
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> r =
                admin.listOffsets(req).all().get(T, TimeUnit.SECONDS);
        Map<TopicPartition, Long> out = new HashMap<>();
        r.forEach((tp, info) -> out.put(tp, info.offset()));
        return out;
    }

    private static Map<TopicPartition, Long> offsets(Map<TopicPartition, OffsetAndMetadata> m) {
        Map<TopicPartition, Long> out = new HashMap<>();
        m.forEach((tp, om) -> {
            if (om != null) {
                out.put(tp, om.offset());
            }
        });
        return out;
    }

    interface Call {
        void run() throws Exception;
    }

    private static void assertCause(Class<? extends Throwable> expected, Call call, String what) {
        ExecutionException e = assertThrows(ExecutionException.class, call::run, what + " fails");
        assertInstanceOf(expected, e.getCause(), what + " fails with " + expected.getSimpleName() + ", got " + e.getCause());
    }
}
