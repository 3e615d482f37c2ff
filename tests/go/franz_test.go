// Compatibility suite for github.com/twmb/franz-go (kgo + kadm).
package compat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func fzClient(t *testing.T, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	base := []kgo.Opt{
		kgo.SeedBrokers(brokerList(addr)...),
		kgo.ClientID("sluice-compat-franz-go"),
		kgo.DialTimeout(10 * time.Second),
		kgo.RetryTimeout(20 * time.Second),
		kgo.FetchMaxWait(250 * time.Millisecond),
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func fzRecords(topic string, msgs []testMsg) []*kgo.Record {
	out := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		hs := make([]kgo.RecordHeader, len(m.Headers))
		for j, h := range m.Headers {
			hs[j] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
		}
		out[i] = &kgo.Record{Topic: topic, Key: m.Key, Value: m.Value, Headers: hs, Timestamp: time.UnixMilli(m.TsMilli)}
	}
	return out
}

func fzCheck(got *kgo.Record, wantOffset int64, want testMsg) error {
	if got.Offset != wantOffset {
		return fmt.Errorf("offset %d, want %d (message index %d)", got.Offset, wantOffset, want.Index)
	}
	if !bytes.Equal(got.Key, want.Key) {
		return fmt.Errorf("offset %d: key %q, want %q", got.Offset, got.Key, want.Key)
	}
	if !bytes.Equal(got.Value, want.Value) {
		return fmt.Errorf("offset %d: value %q, want %q", got.Offset, got.Value, want.Value)
	}
	if got.Timestamp.UnixMilli() != want.TsMilli {
		return fmt.Errorf("offset %d: timestamp %d, want %d", got.Offset, got.Timestamp.UnixMilli(), want.TsMilli)
	}
	if got.Attrs.TimestampType() != 0 {
		return fmt.Errorf("offset %d: timestamp type %d, want 0 (CreateTime)", got.Offset, got.Attrs.TimestampType())
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

// fzConsume reads from the given start offsets (direct partition consuming,
// no group) until want[p] messages have arrived on every partition p, and
// returns them per partition.
func fzConsume(t *testing.T, addr, topic string, starts map[int32]kgo.Offset, want map[int32]int) map[int32][]*kgo.Record {
	t.Helper()
	cl := fzClient(t, addr, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: starts}))
	defer cl.Close()
	got := map[int32][]*kgo.Record{}
	remaining := 0
	for _, n := range want {
		remaining += n
	}
	ctx := testContext(t, 60*time.Second)
	for polls := 0; remaining > 0 && polls < 100000; polls++ {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consuming %s: timed out with %d records missing", topic, remaining)
		}
		for _, fe := range fs.Errors() {
			t.Fatalf("fetch error %s/%d: %v", fe.Topic, fe.Partition, fe.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if len(got[r.Partition]) < want[r.Partition] {
				got[r.Partition] = append(got[r.Partition], r)
				remaining--
			}
		})
	}
	if remaining > 0 {
		t.Fatalf("consuming %s: %d records missing", topic, remaining)
	}
	return got
}

// fzMetadata issues an uncached Metadata request for one topic (kadm's
// ListTopics may answer from the client's metadata cache, up to 5 s stale).
func fzMetadata(ctx context.Context, cl *kgo.Client, topic string) (*kmsg.MetadataResponse, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	req.AllowAutoTopicCreation = false
	return req.RequestWith(ctx, cl)
}

func fzWaitTopic(t *testing.T, cl *kgo.Client, topic string, parts int) {
	t.Helper()
	err := waitFor(topicReadyWait, 100*time.Millisecond, func() error {
		resp, err := fzMetadata(context.Background(), cl, topic)
		if err != nil {
			return err
		}
		if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 {
			return fmt.Errorf("topic %s not ready: %+v", topic, resp.Topics)
		}
		rt := resp.Topics[0]
		if len(rt.Partitions) != parts {
			return fmt.Errorf("topic %s has %d partitions, want %d", topic, len(rt.Partitions), parts)
		}
		for _, p := range rt.Partitions {
			if p.ErrorCode != 0 || p.Leader < 0 {
				return fmt.Errorf("partition %d: leader %d error %d", p.Partition, p.Leader, p.ErrorCode)
			}
			if len(p.Replicas) != replicationFactor {
				return fmt.Errorf("partition %d: replicas %v, want %d of them", p.Partition, p.Replicas, replicationFactor)
			}
			if p.Leader != p.Replicas[0] {
				return fmt.Errorf("partition %d: led by %d, not yet by its preferred replica %d", p.Partition, p.Leader, p.Replicas[0])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("waiting for topic %s: %v", topic, err)
	}
}

func topicConfig(t *testing.T, adm *kadm.Client, topic, key string) kadm.Config {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(testContext(t, 10*time.Second), topic)
	if err != nil {
		t.Fatalf("DescribeTopicConfigs: %v", err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("DescribeTopicConfigs(%s): %v %v", topic, err, rc.Err)
	}
	for _, c := range rc.Configs {
		if c.Key == key {
			return c
		}
	}
	t.Fatalf("DescribeTopicConfigs(%s) has no %s", topic, key)
	return kadm.Config{}
}

func TestFranzGo(t *testing.T) {
	addr := bootstrap(t)
	topic := uniqueTopic("compat-franz")
	adminCl := fzClient(t, addr)
	adm := kadm.NewClient(adminCl)

	// --- CreateTopics with a config, ListTopics ---
	ctx := testContext(t, 20*time.Second)
	ctr, err := adm.CreateTopics(ctx, numPartitions, int16(replicationFactor), map[string]*string{"retention.ms": kadm.StringPtr("604800000")}, topic)
	if err != nil {
		t.Fatalf("CreateTopics: %v", err)
	}
	if r, err := ctr.On(topic, nil); err != nil || r.Err != nil {
		t.Fatalf("CreateTopics(%s): %v %v %s", topic, err, r.Err, r.ErrMessage)
	}
	fzWaitTopic(t, adminCl, topic, numPartitions)
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatalf("ListTopics(%s): %v", topic, err)
	}
	td := tds[topic]
	if td.Err != nil || len(td.Partitions) != numPartitions {
		t.Fatalf("ListTopics(%s) = %+v", topic, td)
	}
	if td.IsInternal || td.ID == (kadm.TopicID{}) {
		t.Fatalf("topic detail: internal=%v id=%v (want a non-zero topic id)", td.IsInternal, td.ID)
	}
	all, err := adm.ListTopics(ctx)
	if err != nil || !all.Has(topic) {
		t.Fatalf("ListTopics() does not include %s: %v", topic, err)
	}
	if ctr2, err := adm.CreateTopics(ctx, numPartitions, int16(replicationFactor), nil, topic); err != nil || !errors.Is(ctr2[topic].Err, kerr.TopicAlreadyExists) {
		t.Fatalf("creating %s twice: %v %v; want TOPIC_ALREADY_EXISTS", topic, err, ctr2[topic].Err)
	}

	// --- configs: describe, incremental alter, describe ---
	if c := topicConfig(t, adm, topic, "retention.ms"); c.MaybeValue() != "604800000" {
		t.Fatalf("retention.ms = %q (source %v), want 604800000", c.MaybeValue(), c.Source)
	}
	if c := topicConfig(t, adm, topic, "cleanup.policy"); c.MaybeValue() != "delete" {
		t.Fatalf("cleanup.policy = %q, want delete", c.MaybeValue())
	}
	acr, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("86400000")},
		{Op: kadm.SetConfig, Name: "max.message.bytes", Value: kadm.StringPtr("2097152")},
	}, topic)
	if err != nil {
		t.Fatalf("AlterTopicConfigs: %v", err)
	}
	for _, r := range acr {
		if r.Err != nil {
			t.Fatalf("AlterTopicConfigs %s: %v %s", r.Name, r.Err, r.ErrMessage)
		}
	}
	if err := waitFor(10*time.Second, 100*time.Millisecond, func() error {
		c := topicConfig(t, adm, topic, "retention.ms")
		if c.MaybeValue() != "86400000" {
			return fmt.Errorf("retention.ms = %q after AlterTopicConfigs", c.MaybeValue())
		}
		if c.Source.String() != "DYNAMIC_TOPIC_CONFIG" {
			return fmt.Errorf("retention.ms source = %v, want DYNAMIC_TOPIC_CONFIG", c.Source)
		}
		if c := topicConfig(t, adm, topic, "max.message.bytes"); c.MaybeValue() != "2097152" {
			return fmt.Errorf("max.message.bytes = %q after AlterTopicConfigs", c.MaybeValue())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Deleting a dynamic config falls back to the default.
	if acr, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.DeleteConfig, Name: "max.message.bytes"}}, topic); err != nil || acr[0].Err != nil {
		t.Fatalf("AlterTopicConfigs(delete): %v %v", err, acr)
	}
	if err := waitFor(10*time.Second, 100*time.Millisecond, func() error {
		if c := topicConfig(t, adm, topic, "max.message.bytes"); c.Source.String() == "DYNAMIC_TOPIC_CONFIG" {
			return fmt.Errorf("max.message.bytes still dynamic (%q) after delete", c.MaybeValue())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// --- produce: idempotent (the default), acks=all (the default) ---
	base := baseTimestamp()
	msgs := makeMessages(numMessages, base)
	recs := fzRecords(topic, msgs)
	prod := fzClient(t, addr, kgo.ProducerLinger(5*time.Millisecond))
	start := time.Now()
	res := prod.ProduceSync(testContext(t, 60*time.Second), recs...)
	if err := res.FirstErr(); err != nil {
		t.Fatalf("ProduceSync: %v", err)
	}
	t.Logf("produced %d records in %s", numMessages, time.Since(start))
	perPart := map[int32][]testMsg{}
	for i, r := range recs {
		if r.Partition < 0 || r.Partition >= numPartitions {
			t.Fatalf("record %d produced to partition %d", i, r.Partition)
		}
		if want := int64(len(perPart[r.Partition])); r.Offset != want {
			t.Fatalf("record %d: produced at %d/%d, want offset %d (per-partition order and contiguity)", i, r.Partition, r.Offset, want)
		}
		perPart[r.Partition] = append(perPart[r.Partition], msgs[i])
	}
	if len(perPart) != numPartitions {
		t.Fatalf("records landed on %d partitions, want %d", len(perPart), numPartitions)
	}

	// --- consume every partition from the start ---
	starts := map[int32]kgo.Offset{}
	counts := map[int32]int{}
	for p := int32(0); p < numPartitions; p++ {
		starts[p] = kgo.NewOffset().AtStart()
		counts[p] = len(perPart[p])
	}
	start = time.Now()
	got := fzConsume(t, addr, topic, starts, counts)
	for p, rs := range got {
		for i, r := range rs {
			if err := fzCheck(r, int64(i), perPart[p][i]); err != nil {
				t.Fatalf("p%d: %v", p, err)
			}
		}
	}
	t.Logf("consumed %d records in %s", numMessages, time.Since(start))

	// --- replay: exact offset 0 again, and from the middle of partition 2 ---
	mid := len(perPart[2]) / 2
	got = fzConsume(t, addr, topic,
		map[int32]kgo.Offset{0: kgo.NewOffset().At(0), 2: kgo.NewOffset().At(int64(mid))},
		map[int32]int{0: len(perPart[0]), 2: len(perPart[2]) - mid})
	for i, r := range got[0] {
		if err := fzCheck(r, int64(i), perPart[0][i]); err != nil {
			t.Fatalf("replay p0: %v", err)
		}
	}
	for i, r := range got[2] {
		if err := fzCheck(r, int64(mid+i), perPart[2][mid+i]); err != nil {
			t.Fatalf("replay p2 from %d: %v", mid, err)
		}
	}

	// --- ListStartOffsets / ListEndOffsets / ListOffsetsAfterMilli ---
	so, err := adm.ListStartOffsets(ctx, topic)
	if err != nil || so.Error() != nil {
		t.Fatalf("ListStartOffsets: %v %v", err, so.Error())
	}
	eo, err := adm.ListEndOffsets(ctx, topic)
	if err != nil || eo.Error() != nil {
		t.Fatalf("ListEndOffsets: %v %v", err, eo.Error())
	}
	lookup := base + int64(numMessages/2) + 1
	ao, err := adm.ListOffsetsAfterMilli(ctx, lookup, topic)
	if err != nil || ao.Error() != nil {
		t.Fatalf("ListOffsetsAfterMilli: %v %v", err, ao.Error())
	}
	after := map[int32]kgo.Offset{}
	afterWant := map[int32]int{}
	for p := int32(0); p < numPartitions; p++ {
		s, _ := so.Lookup(topic, p)
		e, _ := eo.Lookup(topic, p)
		a, _ := ao.Lookup(topic, p)
		if s.Offset != 0 || e.Offset != int64(len(perPart[p])) {
			t.Fatalf("p%d start/end = %d/%d, want 0/%d", p, s.Offset, e.Offset, len(perPart[p]))
		}
		wantIdx := firstAtOrAfter(perPart[p], lookup)
		if a.Offset != int64(wantIdx) || a.Timestamp != perPart[p][wantIdx].TsMilli {
			t.Fatalf("p%d ListOffsetsAfterMilli(%d) = offset %d ts %d, want %d ts %d", p, lookup, a.Offset, a.Timestamp, wantIdx, perPart[p][wantIdx].TsMilli)
		}
		after[p] = kgo.NewOffset().At(a.Offset)
		afterWant[p] = 1
	}
	got = fzConsume(t, addr, topic, after, afterWant)
	for p, rs := range got {
		idx := firstAtOrAfter(perPart[p], lookup)
		if rs[0].Timestamp.UnixMilli() < lookup {
			t.Fatalf("p%d: first record at offset-for-time has timestamp %d < %d", p, rs[0].Timestamp.UnixMilli(), lookup)
		}
		if err := fzCheck(rs[0], int64(idx), perPart[p][idx]); err != nil {
			t.Fatalf("p%d after time lookup: %v", p, err)
		}
	}
	// Past the last timestamp: kadm reports the end offset.
	ao, err = adm.ListOffsetsAfterMilli(ctx, base+int64(numMessages)+60000, topic)
	if err != nil || ao.Error() != nil {
		t.Fatalf("ListOffsetsAfterMilli(future): %v %v", err, ao.Error())
	}
	for p := int32(0); p < numPartitions; p++ {
		a, _ := ao.Lookup(topic, p)
		if a.Offset != int64(len(perPart[p])) {
			t.Fatalf("p%d ListOffsetsAfterMilli(after all) = %d, want end offset %d", p, a.Offset, len(perPart[p]))
		}
	}

	// The raw answer behind that: offset -1, timestamp -1, no error.
	loreq := kmsg.NewPtrListOffsetsRequest()
	lot := kmsg.NewListOffsetsRequestTopic()
	lot.Topic = topic
	for p := int32(0); p < numPartitions; p++ {
		lp := kmsg.NewListOffsetsRequestTopicPartition()
		lp.Partition = p
		lp.CurrentLeaderEpoch = -1
		lp.Timestamp = base + int64(numMessages) + 60000
		lot.Partitions = append(lot.Partitions, lp)
	}
	loreq.Topics = append(loreq.Topics, lot)
	loresp, err := loreq.RequestWith(ctx, adminCl)
	if err != nil {
		t.Fatalf("raw ListOffsets(after all): %v", err)
	}
	for _, rt := range loresp.Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode != 0 || rp.Offset != -1 || rp.Timestamp != -1 {
				t.Fatalf("raw ListOffsets(after all) p%d = err %d offset %d ts %d; want 0, -1, -1", rp.Partition, rp.ErrorCode, rp.Offset, rp.Timestamp)
			}
		}
	}

	// --- DeleteRecords: move partition 3's log start forward ---
	cut := int64(len(perPart[3]) / 3)
	var dro kadm.Offsets
	dro.AddOffset(topic, 3, cut, -1)
	drr, err := adm.DeleteRecords(ctx, dro)
	if err != nil {
		t.Fatalf("DeleteRecords: %v", err)
	}
	if r, ok := drr.Lookup(topic, 3); !ok || r.Err != nil || r.LowWatermark != cut {
		t.Fatalf("DeleteRecords p3 = %+v, want low watermark %d", r, cut)
	}
	so, err = adm.ListStartOffsets(ctx, topic)
	if err != nil || so.Error() != nil {
		t.Fatalf("ListStartOffsets after DeleteRecords: %v %v", err, so.Error())
	}
	if s, _ := so.Lookup(topic, 3); s.Offset != cut {
		t.Fatalf("p3 start offset after DeleteRecords = %d, want %d", s.Offset, cut)
	}
	if s, _ := so.Lookup(topic, 2); s.Offset != 0 {
		t.Fatalf("p2 start offset after DeleteRecords on p3 = %d, want 0", s.Offset)
	}
	got = fzConsume(t, addr, topic, map[int32]kgo.Offset{3: kgo.NewOffset().AtStart()}, map[int32]int{3: len(perPart[3]) - int(cut)})
	if err := fzCheck(got[3][0], cut, perPart[3][cut]); err != nil {
		t.Fatalf("p3 from start after DeleteRecords: %v", err)
	}

	// --- CreatePartitions: 4 -> 6 ---
	cpr, err := adm.CreatePartitions(ctx, 2, topic)
	if err != nil {
		t.Fatalf("CreatePartitions: %v", err)
	}
	if r, err := cpr.On(topic, nil); err != nil || r.Err != nil {
		t.Fatalf("CreatePartitions(%s): %v %v %s", topic, err, r.Err, r.ErrMessage)
	}
	fzWaitTopic(t, adminCl, topic, numPartitions+2)
	eo, err = adm.ListEndOffsets(ctx, topic)
	if err != nil || eo.Error() != nil {
		t.Fatalf("ListEndOffsets after CreatePartitions: %v %v", err, eo.Error())
	}
	for _, p := range []int32{4, 5} {
		if e, ok := eo.Lookup(topic, p); !ok || e.Offset != 0 {
			t.Fatalf("new partition %d end offset = %+v, want 0", p, e)
		}
	}

	// --- DeleteTopics ---
	dtr, err := adm.DeleteTopics(ctx, topic)
	if err != nil {
		t.Fatalf("DeleteTopics: %v", err)
	}
	if r, err := dtr.On(topic, nil); err != nil || r.Err != nil {
		t.Fatalf("DeleteTopics(%s): %v %v", topic, err, r.Err)
	}
	// Uncached Metadata requests (kadm.ListTopics may answer from the client's
	// metadata cache) until the topic is reported UNKNOWN_TOPIC_OR_PARTITION.
	if err := waitFor(20*time.Second, 100*time.Millisecond, func() error {
		mresp, err := fzMetadata(ctx, adminCl, topic)
		if err != nil {
			return err
		}
		if len(mresp.Topics) != 1 || kerr.ErrorForCode(mresp.Topics[0].ErrorCode) != kerr.UnknownTopicOrPartition {
			return fmt.Errorf("metadata for deleted topic = %+v; want UNKNOWN_TOPIC_OR_PARTITION", mresp.Topics)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestFranzGoCompression produces one batch per codec (franz-go's default is
// snappy, unframed) and reads them all back.
func TestFranzGoCompression(t *testing.T) {
	addr := bootstrap(t)
	topic := uniqueTopic("compat-franz-codecs")
	adminCl := fzClient(t, addr)
	adm := kadm.NewClient(adminCl)
	ctx := testContext(t, 60*time.Second)
	if r, err := adm.CreateTopics(ctx, 1, int16(replicationFactor), nil, topic); err != nil || r[topic].Err != nil {
		t.Fatalf("CreateTopics: %v %v", err, r[topic].Err)
	}
	fzWaitTopic(t, adminCl, topic, 1)
	defer func() { _, _ = adm.DeleteTopics(context.Background(), topic) }()

	codecs := []kgo.CompressionCodec{kgo.NoCompression(), kgo.GzipCompression(), kgo.SnappyCompression(), kgo.Lz4Compression(), kgo.ZstdCompression()}
	const perCodec = 300
	var want []testMsg
	base := baseTimestamp()
	for ci, codec := range codecs {
		msgs := makeMessages(perCodec, base+int64(ci*perCodec))
		prod := fzClient(t, addr, kgo.ProducerBatchCompression(codec), kgo.ProducerLinger(20*time.Millisecond))
		recs := fzRecords(topic, msgs)
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("codec %d: ProduceSync: %v", ci, err)
		}
		prod.Close()
		want = append(want, msgs...)
	}
	got := fzConsume(t, addr, topic, map[int32]kgo.Offset{0: kgo.NewOffset().AtStart()}, map[int32]int{0: len(want)})
	for i, r := range got[0] {
		if err := fzCheck(r, int64(i), want[i]); err != nil {
			t.Fatalf("codec round trip: %v", err)
		}
	}
}
