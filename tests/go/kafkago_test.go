// Compatibility suite for github.com/segmentio/kafka-go (v0.4.x).
package compat

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	kafka "github.com/segmentio/kafka-go"
)

// kgDialer bounds every kafka-go connection attempt.
var kgDialer = &kafka.Dialer{Timeout: 10 * time.Second, ClientID: "sluice-compat-kafka-go"}

// kgDial dials the first of the bootstrap brokers that answers (a Conn talks to
// one broker).
func kgDial(addr string) (*kafka.Conn, error) {
	var errs []error
	for _, a := range brokerList(addr) {
		conn, err := kgDialer.Dial("tcp", a)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("no bootstrap broker of %q answers: %w", addr, errors.Join(errs...))
}

// kgDialLeader dials the leader of topic/partition, bootstrapping from the
// first broker that answers.
func kgDialLeader(t *testing.T, addr, topic string, p int) (*kafka.Conn, error) {
	var errs []error
	for _, a := range brokerList(addr) {
		conn, err := kgDialer.DialLeader(testContext(t, 10*time.Second), "tcp", a, topic, p)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// kgControllerConn dials the cluster controller (CreateTopics/DeleteTopics via
// Conn must go there).
func kgControllerConn(t *testing.T, addr string) *kafka.Conn {
	t.Helper()
	conn, err := kgDial(addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	ctrl, err := conn.Controller()
	if err != nil {
		t.Fatalf("Controller(): %v", err)
	}
	caddr := net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port))
	cconn, err := kgDialer.Dial("tcp", caddr)
	if err != nil {
		t.Fatalf("dial controller %s: %v", caddr, err)
	}
	t.Cleanup(func() { cconn.Close() })
	return cconn
}

// kgWaitPartitions waits until the topic's metadata shows n partitions, each
// with replicationFactor replicas and led by its preferred replica (see
// topicReadyWait).
func kgWaitPartitions(t *testing.T, addr, topic string, n int) []kafka.Partition {
	t.Helper()
	var parts []kafka.Partition
	// Every broker must name the leaders: kafka-go's Writer fails a message whose
	// partition the broker it asked names no leader for, and a broker that holds no
	// replica learns a new leader from the leader's notice a moment later.
	err := waitFor(topicReadyWait, 100*time.Millisecond, func() error {
		for _, a := range brokerList(addr) {
			ps, err := kgReadPartitions(a, topic)
			if err != nil {
				return err
			}
			if err := kgCheckPartitions(ps, topic, n); err != nil {
				return fmt.Errorf("%s: %w", a, err)
			}
			parts = ps
		}
		return nil
	})
	if err != nil {
		t.Fatalf("waiting for %s metadata: %v", topic, err)
	}
	return parts
}

func kgMessages(msgs []testMsg) []kafka.Message {
	out := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		hs := make([]kafka.Header, len(m.Headers))
		for j, h := range m.Headers {
			hs[j] = kafka.Header{Key: h.Key, Value: h.Value}
		}
		out[i] = kafka.Message{Key: m.Key, Value: m.Value, Headers: hs, Time: time.UnixMilli(m.TsMilli)}
	}
	return out
}

// kgCheck compares one fetched message with what was sent.
func kgCheck(got kafka.Message, wantOffset int64, want testMsg) error {
	if got.Offset != wantOffset {
		return fmt.Errorf("offset %d, want %d (message index %d)", got.Offset, wantOffset, want.Index)
	}
	if !bytes.Equal(got.Key, want.Key) {
		return fmt.Errorf("offset %d: key %q, want %q", got.Offset, got.Key, want.Key)
	}
	if !bytes.Equal(got.Value, want.Value) {
		return fmt.Errorf("offset %d: value %q, want %q", got.Offset, got.Value, want.Value)
	}
	if got.Time.UnixMilli() != want.TsMilli {
		return fmt.Errorf("offset %d: timestamp %d, want %d", got.Offset, got.Time.UnixMilli(), want.TsMilli)
	}
	if len(got.Headers) != len(want.Headers) {
		return fmt.Errorf("offset %d: %d headers, want %d", got.Offset, len(got.Headers), len(want.Headers))
	}
	for i, h := range want.Headers {
		if got.Headers[i].Key != h.Key || !bytes.Equal(got.Headers[i].Value, h.Value) {
			return fmt.Errorf("offset %d: header %d = %q:%x, want %q:%x", got.Offset, i,
				got.Headers[i].Key, got.Headers[i].Value, h.Key, h.Value)
		}
	}
	return nil
}

// kgReadPartition reads want's messages from one partition starting at offset
// start with a partition Reader (no consumer group) and checks each one.
func kgReadPartition(t *testing.T, addr, topic string, p int, start int64, want []testMsg) {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   brokerList(addr),
		Topic:     topic,
		Partition: p,
		Dialer:    kgDialer,
		MinBytes:  1,
		MaxBytes:  4 << 20,
		MaxWait:   250 * time.Millisecond,
	})
	defer r.Close()
	if err := r.SetOffset(start); err != nil {
		t.Fatalf("p%d SetOffset(%d): %v", p, start, err)
	}
	ctx := testContext(t, 60*time.Second)
	for i, w := range want {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("p%d: reading message %d of %d (offset %d): %v", p, i, len(want), start+int64(i), err)
		}
		if m.Partition != p || m.Topic != topic {
			t.Fatalf("p%d: message from %s/%d", p, m.Topic, m.Partition)
		}
		if err := kgCheck(m, start+int64(i), w); err != nil {
			t.Fatalf("p%d: %v", p, err)
		}
	}
}

func TestKafkaGo(t *testing.T) {
	addr := bootstrap(t)
	topic := uniqueTopic("compat-kafkago")
	phase := phaseTimer(t)
	ctrl := kgControllerConn(t, addr)

	// --- topic admin through Conn: CreateTopics, ReadPartitions ---
	err := ctrl.CreateTopics(kafka.TopicConfig{
		Topic:             topic,
		NumPartitions:     numPartitions,
		ReplicationFactor: replicationFactor,
		ConfigEntries:     []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "delete"}},
	})
	if err != nil {
		t.Fatalf("CreateTopics: %v", err)
	}
	parts := kgWaitPartitions(t, addr, topic, numPartitions)
	for i, p := range parts {
		if p.Topic != topic || p.ID != i {
			t.Fatalf("ReadPartitions[%d] = %s/%d", i, p.Topic, p.ID)
		}
	}
	// Conn.CreateTopics swallows TOPIC_ALREADY_EXISTS; kafka.Client reports it.
	if err := ctrl.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: numPartitions, ReplicationFactor: replicationFactor}); err != nil {
		t.Fatalf("Conn.CreateTopics of an existing topic: %v (kafka-go ignores TOPIC_ALREADY_EXISTS)", err)
	}
	// kafka.Client caches metadata for MetadataTTL (6 s by default); keep it
	// short so admin changes are seen promptly.
	cl := &kafka.Client{Addr: kafka.TCP(brokerList(addr)...), Timeout: 10 * time.Second,
		Transport: &kafka.Transport{ClientID: "sluice-compat-kafka-go", DialTimeout: 10 * time.Second, MetadataTTL: 200 * time.Millisecond}}
	ctr, err := cl.CreateTopics(testContext(t, 10*time.Second), &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: numPartitions, ReplicationFactor: replicationFactor}},
	})
	if err != nil || !errors.Is(ctr.Errors[topic], kafka.TopicAlreadyExists) {
		t.Fatalf("Client.CreateTopics of an existing topic: %v %v; want TopicAlreadyExists", err, ctr.Errors)
	}

	phase("produce")
	// --- produce: Writer with the Hash balancer and acks=all ---
	base := baseTimestamp()
	msgs := makeMessages(numMessages, base)
	perPart := make([][]testMsg, numPartitions)
	hash := &kafka.Hash{}
	all := []int{0, 1, 2, 3}
	kmsgs := kgMessages(msgs)
	for i, km := range kmsgs {
		p := hash.Balance(km, all...)
		perPart[p] = append(perPart[p], msgs[i])
	}
	for p := range perPart {
		if len(perPart[p]) == 0 {
			t.Fatalf("hash balancer put no message on partition %d", p)
		}
	}
	w := &kafka.Writer{
		Addr:                   kafka.TCP(brokerList(addr)...),
		Topic:                  topic,
		Balancer:               &kafka.Hash{},
		RequiredAcks:           kafka.RequireAll,
		BatchSize:              500,
		BatchTimeout:           5 * time.Millisecond,
		MaxAttempts:            5,
		WriteTimeout:           20 * time.Second,
		ReadTimeout:            20 * time.Second,
		AllowAutoTopicCreation: false,
		Transport:              &kafka.Transport{ClientID: "sluice-compat-kafka-go", DialTimeout: 10 * time.Second},
	}
	start := time.Now()
	if err := w.WriteMessages(testContext(t, 60*time.Second), kmsgs...); err != nil {
		t.Fatalf("Writer.WriteMessages: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Writer.Close: %v", err)
	}
	st := w.Stats()
	t.Logf("produced %d messages in %s (writes=%d messages=%d errors=%d)", numMessages, time.Since(start), st.Writes, st.Messages, st.Errors)

	phase("consume")
	// --- consume every partition from offset 0, in order ---
	start = time.Now()
	for p := 0; p < numPartitions; p++ {
		kgReadPartition(t, addr, topic, p, 0, perPart[p])
	}
	t.Logf("read back %d messages in %s", numMessages, time.Since(start))

	phase("replay")
	// --- replay: a fresh reader from offset 0 sees the same log, and a reader
	// started mid-log starts exactly there ---
	kgReadPartition(t, addr, topic, 0, 0, perPart[0])
	mid := len(perPart[1]) / 2
	kgReadPartition(t, addr, topic, 1, int64(mid), perPart[1][mid:])

	phase("Conn offsets")
	// --- offsets through Conn: first/last and offset for time (ListOffsets) ---
	lookup := base + int64(numMessages/2) + 1
	for p := 0; p < numPartitions; p++ {
		conn, err := kgDialLeader(t, addr, topic, p)
		if err != nil {
			t.Fatalf("DialLeader p%d: %v", p, err)
		}
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		first, err := conn.ReadFirstOffset()
		if err != nil || first != 0 {
			t.Fatalf("p%d ReadFirstOffset = %d, %v; want 0", p, first, err)
		}
		last, err := conn.ReadLastOffset()
		if err != nil || last != int64(len(perPart[p])) {
			t.Fatalf("p%d ReadLastOffset = %d, %v; want %d", p, last, err, len(perPart[p]))
		}
		f2, l2, err := conn.ReadOffsets()
		if err != nil || f2 != 0 || l2 != last {
			t.Fatalf("p%d ReadOffsets = %d,%d,%v; want 0,%d", p, f2, l2, err, last)
		}
		wantIdx := firstAtOrAfter(perPart[p], lookup)
		off, err := conn.ReadOffset(time.UnixMilli(lookup))
		if err != nil {
			t.Fatalf("p%d ReadOffset(t): %v", p, err)
		}
		if off != int64(wantIdx) {
			t.Fatalf("p%d ReadOffset(t=%d) = %d, want %d", p, lookup, off, wantIdx)
		}
		if _, err := conn.Seek(off, kafka.SeekAbsolute); err != nil {
			t.Fatalf("p%d Seek(%d): %v", p, off, err)
		}
		m, err := conn.ReadMessage(1 << 20)
		if err != nil {
			t.Fatalf("p%d Conn.ReadMessage at %d: %v", p, off, err)
		}
		if m.Time.UnixMilli() < lookup {
			t.Fatalf("p%d: first message at offset-for-time has timestamp %d < %d", p, m.Time.UnixMilli(), lookup)
		}
		if err := kgCheck(m, off, perPart[p][wantIdx]); err != nil {
			t.Fatalf("p%d Conn.ReadMessage: %v", p, err)
		}
		// A timestamp before every message resolves to the first offset.
		if off, err := conn.ReadOffset(time.UnixMilli(base - 60000)); err != nil || off != 0 {
			t.Fatalf("p%d ReadOffset(before all) = %d, %v; want 0", p, off, err)
		}
		// A timestamp after every message: Kafka answers offset -1 (ListOffsets v1).
		if off, err := conn.ReadOffset(time.UnixMilli(base + numMessages + 60000)); err != nil || off != -1 {
			t.Fatalf("p%d ReadOffset(after all) = %d, %v; want -1", p, off, err)
		}
		conn.Close()
	}

	phase("Client.ListOffsets")
	// --- the same through kafka.Client (ListOffsets with first/last/time) ---
	var reqs []kafka.OffsetRequest
	for p := 0; p < numPartitions; p++ {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	lor, err := cl.ListOffsets(testContext(t, 20*time.Second), &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		t.Fatalf("Client.ListOffsets: %v", err)
	}
	for _, po := range lor.Topics[topic] {
		if po.Error != nil || po.FirstOffset != 0 || po.LastOffset != int64(len(perPart[po.Partition])) {
			t.Fatalf("Client.ListOffsets p%d = first %d last %d err %v; want 0 %d", po.Partition, po.FirstOffset, po.LastOffset, po.Error, len(perPart[po.Partition]))
		}
	}
	if len(lor.Topics[topic]) != numPartitions {
		t.Fatalf("Client.ListOffsets returned %d partitions", len(lor.Topics[topic]))
	}

	phase("Client admin")
	// --- more admin through kafka.Client: Metadata, configs, partitions ---
	kgClientAdmin(t, cl, topic)

	phase("DeleteTopics")
	// --- DeleteTopics through Conn ---
	if err := ctrl.DeleteTopics(topic); err != nil {
		t.Fatalf("DeleteTopics: %v", err)
	}
	err = waitFor(20*time.Second, 100*time.Millisecond, func() error {
		md, err := cl.Metadata(testContext(t, 10*time.Second), &kafka.MetadataRequest{})
		if err != nil {
			return err
		}
		for _, tp := range md.Topics {
			if tp.Name == topic {
				return fmt.Errorf("topic %s still listed", topic)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after DeleteTopics: %v", err)
	}
	phase("done")
}

func kgClientAdmin(t *testing.T, cl *kafka.Client, topic string) {
	t.Helper()
	md, err := cl.Metadata(testContext(t, 10*time.Second), &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatalf("Client.Metadata: %v", err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Name != topic || md.Topics[0].Error != nil || len(md.Topics[0].Partitions) != numPartitions {
		t.Fatalf("Client.Metadata(%s) = %+v", topic, md.Topics)
	}
	if len(md.Brokers) == 0 {
		t.Fatalf("Client.Metadata: no brokers")
	}

	describe := func(names ...string) map[string]kafka.DescribeConfigResponseConfigEntry {
		t.Helper()
		dr, err := cl.DescribeConfigs(testContext(t, 10*time.Second), &kafka.DescribeConfigsRequest{
			Resources: []kafka.DescribeConfigRequestResource{{
				ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: names,
			}},
		})
		if err != nil {
			t.Fatalf("Client.DescribeConfigs: %v", err)
		}
		if len(dr.Resources) != 1 || dr.Resources[0].Error != nil {
			t.Fatalf("Client.DescribeConfigs = %+v", dr.Resources)
		}
		out := map[string]kafka.DescribeConfigResponseConfigEntry{}
		for _, e := range dr.Resources[0].ConfigEntries {
			out[e.ConfigName] = e
		}
		return out
	}
	cfg := describe("cleanup.policy", "retention.ms")
	if cfg["cleanup.policy"].ConfigValue != "delete" {
		t.Fatalf("cleanup.policy = %+v, want delete", cfg["cleanup.policy"])
	}
	if _, ok := cfg["retention.ms"]; !ok {
		t.Fatalf("DescribeConfigs did not return retention.ms: %+v", cfg)
	}

	// IncrementalAlterConfigs: set retention.ms, read it back.
	iar, err := cl.IncrementalAlterConfigs(testContext(t, 10*time.Second), &kafka.IncrementalAlterConfigsRequest{
		Resources: []kafka.IncrementalAlterConfigsRequestResource{{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
			Configs: []kafka.IncrementalAlterConfigsRequestConfig{{
				Name: "retention.ms", Value: "86400000", ConfigOperation: kafka.ConfigOperationSet,
			}},
		}},
	})
	if err != nil {
		t.Fatalf("Client.IncrementalAlterConfigs: %v", err)
	}
	for _, r := range iar.Resources {
		if r.Error != nil {
			t.Fatalf("IncrementalAlterConfigs %s: %v", r.ResourceName, r.Error)
		}
	}
	if err := waitFor(10*time.Second, 100*time.Millisecond, func() error {
		if v := describe("retention.ms")["retention.ms"].ConfigValue; v != "86400000" {
			return fmt.Errorf("retention.ms = %q after IncrementalAlterConfigs", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// AlterConfigs (the legacy, whole-set variant).
	ar, err := cl.AlterConfigs(testContext(t, 10*time.Second), &kafka.AlterConfigsRequest{
		Resources: []kafka.AlterConfigRequestResource{{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
			Configs: []kafka.AlterConfigRequestConfig{
				{Name: "retention.ms", Value: "172800000"},
				{Name: "cleanup.policy", Value: "delete"},
			},
		}},
	})
	if err != nil {
		t.Fatalf("Client.AlterConfigs: %v", err)
	}
	for res, e := range ar.Errors {
		if e != nil {
			t.Fatalf("AlterConfigs %v: %v", res, e)
		}
	}
	if err := waitFor(10*time.Second, 100*time.Millisecond, func() error {
		if v := describe("retention.ms")["retention.ms"].ConfigValue; v != "172800000" {
			return fmt.Errorf("retention.ms = %q after AlterConfigs", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// CreatePartitions: grow 4 -> 6.
	cpr, err := cl.CreatePartitions(testContext(t, 10*time.Second), &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: numPartitions + 2}},
	})
	if err != nil {
		t.Fatalf("Client.CreatePartitions: %v", err)
	}
	if e := cpr.Errors[topic]; e != nil {
		t.Fatalf("CreatePartitions %s: %v", topic, e)
	}
	if err := waitFor(20*time.Second, 100*time.Millisecond, func() error {
		md, err := cl.Metadata(testContext(t, 10*time.Second), &kafka.MetadataRequest{Topics: []string{topic}})
		if err != nil {
			return err
		}
		if len(md.Topics) != 1 || len(md.Topics[0].Partitions) != numPartitions+2 {
			return fmt.Errorf("metadata after CreatePartitions: %+v", md.Topics)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestKafkaGoCompression round-trips every codec kafka-go implements through
// the broker (kafka-go's snappy uses the xerial framing by default).
func TestKafkaGoCompression(t *testing.T) {
	addr := bootstrap(t)
	topic := uniqueTopic("compat-kafkago-codecs")
	ctrl := kgControllerConn(t, addr)
	if err := ctrl.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: 1, ReplicationFactor: replicationFactor}); err != nil {
		t.Fatalf("CreateTopics: %v", err)
	}
	kgWaitPartitions(t, addr, topic, 1)
	defer func() { _ = ctrl.DeleteTopics(topic) }()

	codecs := []kafka.Compression{kafka.Gzip, kafka.Snappy, kafka.Lz4, kafka.Zstd}
	const perCodec = 300
	var want []testMsg
	base := baseTimestamp()
	for ci, codec := range codecs {
		msgs := makeMessages(perCodec, base+int64(ci*perCodec))
		for i := range msgs {
			msgs[i].Value = append(msgs[i].Value, []byte(" "+codec.String()+" compressible compressible compressible")...)
		}
		w := &kafka.Writer{
			Addr: kafka.TCP(brokerList(addr)...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
			Compression: codec, BatchSize: perCodec, BatchTimeout: 5 * time.Millisecond,
			WriteTimeout: 20 * time.Second, ReadTimeout: 20 * time.Second,
			Transport: &kafka.Transport{ClientID: "sluice-compat-kafka-go", DialTimeout: 10 * time.Second},
		}
		if err := w.WriteMessages(testContext(t, 30*time.Second), kgMessages(msgs)...); err != nil {
			t.Fatalf("%s: WriteMessages: %v", codec, err)
		}
		_ = w.Close()
		want = append(want, msgs...)
	}
	kgReadPartition(t, addr, topic, 0, 0, want)
}

// kgReadPartitions is one broker's Metadata for topic.
func kgReadPartitions(addr, topic string) ([]kafka.Partition, error) {
	conn, err := kgDialer.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	return conn.ReadPartitions(topic)
}

// kgCheckPartitions says what keeps topic's partitions ps from being ready: n of them,
// each with its replicas, led by its preferred replica.
func kgCheckPartitions(ps []kafka.Partition, topic string, n int) error {

	if len(ps) != n {
		return fmt.Errorf("topic %s has %d partitions, want %d", topic, len(ps), n)
	}
	for _, p := range ps {
		if p.Leader.Host == "" || p.Leader.ID < 0 {
			return fmt.Errorf("partition %d has no leader yet", p.ID)
		}
		if len(p.Replicas) != replicationFactor {
			return fmt.Errorf("partition %d has %d replicas %v, want %d", p.ID, len(p.Replicas), p.Replicas, replicationFactor)
		}
		if p.Leader.ID != p.Replicas[0].ID {
			return fmt.Errorf("partition %d led by %d, not yet by its preferred replica %d", p.ID, p.Leader.ID, p.Replicas[0].ID)
		}
	}
	return nil
}
