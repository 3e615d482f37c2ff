// Consumer-group compatibility: kafka-go's group Reader and franz-go's group
// consumer (cooperative-sticky) with manual commits, plus kadm's group admin.
//
// Brokers may delay the first rebalance of a new group by
// group.initial.rebalance.delay.ms (Kafka's default is 3 s), so every wait for
// a join allows for several of those.
package compat

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	groupMessages = 2000             // keyed messages in the first round
	groupExtra    = 200              // messages produced for the resume check
	groupWait     = 45 * time.Second // bound on any single consume phase
)

func uniqueGroup(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
}

// ---------------------------------------------------------------------------
// kafka-go: Reader{GroupID, CommitInterval: 0}, FetchMessage → CommitMessages.

// kgGroupReader is a kafka-go group reader with synchronous commits and short
// group timers so that joins and leaves are bounded.
func kgGroupReader(addr, group, topic string) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:           brokerList(addr),
		GroupID:           group,
		Topic:             topic,
		Dialer:            kgDialer,
		MinBytes:          1,
		MaxBytes:          4 << 20,
		MaxWait:           250 * time.Millisecond,
		CommitInterval:    0, // CommitMessages is synchronous
		StartOffset:       kafka.FirstOffset,
		HeartbeatInterval: 1 * time.Second,
		SessionTimeout:    10 * time.Second,
		RebalanceTimeout:  10 * time.Second,
		JoinGroupBackoff:  500 * time.Millisecond,
		ReadBackoffMin:    50 * time.Millisecond,
		ReadBackoffMax:    250 * time.Millisecond,
	})
}

// kgProduce writes msgs with the Hash balancer and returns how many went to
// each partition.
func kgProduce(t *testing.T, addr, topic string, msgs []testMsg) []int {
	t.Helper()
	counts := make([]int, numPartitions)
	hash := &kafka.Hash{}
	all := []int{0, 1, 2, 3}
	kmsgs := kgMessages(msgs)
	for _, km := range kmsgs {
		counts[hash.Balance(km, all...)]++
	}
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokerList(addr)...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    500,
		BatchTimeout: 5 * time.Millisecond,
		MaxAttempts:  5,
		WriteTimeout: 20 * time.Second,
		ReadTimeout:  20 * time.Second,
		Transport:    &kafka.Transport{ClientID: "sluice-compat-kafka-go", DialTimeout: 10 * time.Second},
	}
	if err := w.WriteMessages(testContext(t, 60*time.Second), kmsgs...); err != nil {
		t.Fatalf("Writer.WriteMessages: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Writer.Close: %v", err)
	}
	return counts
}

// kgEndOffsets lists the end offset of every partition.
func kgEndOffsets(t *testing.T, cl *kafka.Client, topic string) map[int]int64 {
	t.Helper()
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {}}}
	for p := 0; p < numPartitions; p++ {
		req.Topics[topic] = append(req.Topics[topic], kafka.LastOffsetOf(p))
	}
	resp, err := cl.ListOffsets(testContext(t, 10*time.Second), req)
	if err != nil {
		t.Fatalf("ListOffsets(%s): %v", topic, err)
	}
	out := map[int]int64{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			t.Fatalf("ListOffsets(%s/%d): %v", topic, po.Partition, po.Error)
		}
		out[po.Partition] = po.LastOffset
	}
	if len(out) != numPartitions {
		t.Fatalf("ListOffsets(%s) answered %d partitions, want %d: %+v", topic, len(out), numPartitions, resp.Topics)
	}
	return out
}

// kgCommitted reads the group's committed offsets with OffsetFetch.
func kgCommitted(t *testing.T, cl *kafka.Client, group, topic string) map[int]int64 {
	t.Helper()
	resp, err := cl.OffsetFetch(testContext(t, 10*time.Second), &kafka.OffsetFetchRequest{
		GroupID: group,
		Topics:  map[string][]int{topic: {0, 1, 2, 3}},
	})
	if err != nil {
		t.Fatalf("OffsetFetch(%s): %v", group, err)
	}
	if resp.Error != nil {
		t.Fatalf("OffsetFetch(%s): group error %v", group, resp.Error)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("OffsetFetch(%s) %s/%d: %v", group, topic, p.Partition, p.Error)
		}
		out[p.Partition] = p.CommittedOffset
	}
	return out
}

// kgConsumeGroup fetches with r, checks, commits every message right after
// "processing" it, and stops once every message in want (by key) has been
// seen. It returns per partition the offsets it processed. Messages at an
// offset below minOffset[p] fail the test (they were already committed).
func kgConsumeGroup(t *testing.T, r *kafka.Reader, topic string, want []testMsg, minOffset map[int]int64) map[int][]int64 {
	t.Helper()
	byKey := make(map[string]testMsg, len(want))
	for _, m := range want {
		byKey[string(m.Key)] = m
	}
	seen := make(map[string]bool, len(want))
	got := map[int][]int64{}
	ctx := testContext(t, groupWait)
	for len(seen) < len(want) {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("FetchMessage: %v (after %d of %d distinct messages; stats %+v)", err, len(seen), len(want), r.Stats())
		}
		if m.Topic != topic {
			t.Fatalf("message from topic %q, want %q", m.Topic, topic)
		}
		if m.Offset < minOffset[m.Partition] {
			t.Fatalf("p%d offset %d redelivered: the group had committed %d", m.Partition, m.Offset, minOffset[m.Partition])
		}
		w, ok := byKey[string(m.Key)]
		if !ok {
			t.Fatalf("p%d offset %d: unexpected key %q", m.Partition, m.Offset, m.Key)
		}
		if err := kgCheck(m, m.Offset, w); err != nil { // content only; offsets are checked below
			t.Fatalf("p%d: %v", m.Partition, err)
		}
		seen[string(m.Key)] = true
		got[m.Partition] = append(got[m.Partition], m.Offset)
		if err := r.CommitMessages(ctx, m); err != nil {
			t.Fatalf("CommitMessages(p%d offset %d): %v", m.Partition, m.Offset, err)
		}
	}
	return got
}

func TestGroupsKafkaGo(t *testing.T) {
	addr := bootstrap(t)
	topic := uniqueTopic("compat-groups-kafkago")
	group := uniqueGroup("compat-groups-kafkago")
	phase := phaseTimer(t)

	ctrl := kgControllerConn(t, addr)
	if err := ctrl.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: numPartitions, ReplicationFactor: replicationFactor}); err != nil {
		t.Fatalf("CreateTopics: %v", err)
	}
	kgWaitPartitions(t, addr, topic, numPartitions)
	cl := &kafka.Client{Addr: kafka.TCP(brokerList(addr)...), Timeout: 10 * time.Second,
		Transport: &kafka.Transport{ClientID: "sluice-compat-kafka-go", DialTimeout: 10 * time.Second, MetadataTTL: 200 * time.Millisecond}}

	phase("produce")
	msgs := makeMessages(groupMessages+groupExtra, baseTimestamp())
	first, extra := msgs[:groupMessages], msgs[groupMessages:]
	counts := kgProduce(t, addr, topic, first)
	ends := kgEndOffsets(t, cl, topic)
	for p := 0; p < numPartitions; p++ {
		if ends[p] != int64(counts[p]) || counts[p] == 0 {
			t.Fatalf("p%d end offset %d after producing %d messages to it", p, ends[p], counts[p])
		}
	}

	phase("group consume + commit")
	start := time.Now()
	r1 := kgGroupReader(addr, group, topic)
	got := kgConsumeGroup(t, r1, topic, first, nil)
	processed := 0
	for p, offs := range got {
		processed += len(offs)
		if n := len(offs); n > 0 && offs[n-1] != ends[p]-1 {
			t.Errorf("p%d: last processed offset %d, end offset %d", p, offs[n-1], ends[p])
		}
	}
	t.Logf("reader 1 processed %d messages (%d distinct) over %d partitions in %s",
		processed, groupMessages, len(got), time.Since(start).Round(time.Millisecond))
	if len(got) != numPartitions {
		t.Errorf("reader 1 consumed from %d partitions, want %d (the only member owns them all)", len(got), numPartitions)
	}

	// Committed offsets (OffsetFetch v1 from kafka-go's Client) equal the end offsets.
	committed := kgCommitted(t, cl, group, topic)
	for p := 0; p < numPartitions; p++ {
		if committed[p] != ends[p] {
			t.Errorf("p%d: committed offset %d, end offset %d", p, committed[p], ends[p])
		}
	}
	if t.Failed() {
		r1.Close()
		t.FailNow()
	}

	phase("leave")
	// Close sends LeaveGroup; the group keeps its offsets.
	if err := r1.Close(); err != nil {
		t.Fatalf("Reader.Close (LeaveGroup): %v", err)
	}
	if c := kgCommitted(t, cl, group, topic); fmt.Sprint(c) != fmt.Sprint(committed) {
		t.Fatalf("committed offsets changed after LeaveGroup: %v, were %v", c, committed)
	}

	phase("resume")
	// New messages arrive; a second reader in the same group resumes from the
	// commits: it sees every new message and nothing old.
	extraCounts := kgProduce(t, addr, topic, extra)
	ends2 := kgEndOffsets(t, cl, topic)
	start = time.Now()
	r2 := kgGroupReader(addr, group, topic)
	defer r2.Close()
	got2 := kgConsumeGroup(t, r2, topic, extra, ends)
	for p := 0; p < numPartitions; p++ {
		want := ends2[p] - ends[p]
		if want != int64(extraCounts[p]) {
			t.Errorf("p%d: end offset moved by %d after producing %d", p, want, extraCounts[p])
		}
		if int64(len(got2[p])) != want {
			t.Errorf("p%d: reader 2 processed %d messages, want the %d new ones (offsets %v)", p, len(got2[p]), want, got2[p])
		}
		if want > 0 && got2[p][0] != ends[p] {
			t.Errorf("p%d: reader 2 started at offset %d, want the committed %d", p, got2[p][0], ends[p])
		}
	}
	t.Logf("reader 2 resumed and processed %d new messages in %s", len(extra), time.Since(start).Round(time.Millisecond))
	committed2 := kgCommitted(t, cl, group, topic)
	for p := 0; p < numPartitions; p++ {
		if committed2[p] != ends2[p] {
			t.Errorf("after resume p%d: committed offset %d, end offset %d", p, committed2[p], ends2[p])
		}
	}
	if err := r2.Close(); err != nil {
		t.Errorf("Reader.Close (LeaveGroup): %v", err)
	}
	phase("done")
}

// ---------------------------------------------------------------------------
// franz-go: cooperative-sticky group consumer with manual commits; kadm.

// fzMember is one group consumer running a poll → process → CommitRecords loop.
type fzMember struct {
	name string
	cl   *kgo.Client

	mu        sync.Mutex
	assigned  map[int32]bool    // current assignment (from the callbacks)
	assigns   int               // OnPartitionsAssigned calls with partitions
	revokes   int               // OnPartitionsRevoked calls with partitions
	processed map[int32][]int64 // offsets processed, per partition
	keys      map[string]int    // times each key was processed
	errs      []error           // fetch/commit/callback errors
	done      chan struct{}     // closed when the loop ends
	cancel    context.CancelFunc
}

func (m *fzMember) fail(err error) {
	m.mu.Lock()
	m.errs = append(m.errs, err)
	m.mu.Unlock()
}

func (m *fzMember) snapshot() (assigned []int32, errs []error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for p, ok := range m.assigned {
		if ok {
			assigned = append(assigned, p)
		}
	}
	sort.Slice(assigned, func(i, j int) bool { return assigned[i] < assigned[j] })
	return assigned, append([]error(nil), m.errs...)
}

func startFzMember(t *testing.T, addr, group, topic, name string) *fzMember {
	t.Helper()
	m := &fzMember{name: name, assigned: map[int32]bool{}, processed: map[int32][]int64{},
		keys: map[string]int{}, done: make(chan struct{})}
	onAssigned := func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if len(a[topic]) > 0 {
			m.assigns++
		}
		for _, p := range a[topic] {
			m.assigned[p] = true
		}
	}
	onRevoked := func(ctx context.Context, cl *kgo.Client, r map[string][]int32) {
		// Commit what was processed before giving partitions away.
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			m.fail(fmt.Errorf("%s: CommitUncommittedOffsets on revoke: %w", name, err))
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if len(r[topic]) > 0 {
			m.revokes++
		}
		for _, p := range r[topic] {
			delete(m.assigned, p)
		}
	}
	onLost := func(_ context.Context, _ *kgo.Client, l map[string][]int32) {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, p := range l[topic] {
			delete(m.assigned, p)
		}
	}
	m.cl = fzClient(t, addr,
		kgo.ClientID("sluice-compat-franz-go-"+name),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(10*time.Second),
		kgo.RebalanceTimeout(20*time.Second),
		kgo.HeartbeatInterval(500*time.Millisecond),
		kgo.OnPartitionsAssigned(onAssigned),
		kgo.OnPartitionsRevoked(onRevoked),
		kgo.OnPartitionsLost(onLost),
	)
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			fs := m.cl.PollFetches(ctx)
			if fs.IsClientClosed() || ctx.Err() != nil {
				return
			}
			fs.EachError(func(tp string, p int32, err error) {
				m.fail(fmt.Errorf("%s: fetch %s/%d: %w", name, tp, p, err))
			})
			recs := fs.Records()
			if len(recs) == 0 {
				continue
			}
			m.mu.Lock()
			for _, r := range recs { // "process"
				m.processed[r.Partition] = append(m.processed[r.Partition], r.Offset)
				m.keys[string(r.Key)]++
			}
			m.mu.Unlock()
			if err := m.cl.CommitRecords(ctx, recs...); err != nil && ctx.Err() == nil {
				m.fail(fmt.Errorf("%s: CommitRecords(%d records): %w", name, len(recs), err))
			}
		}
	}()
	t.Cleanup(m.stop)
	return m
}

// stop ends the poll loop and closes the client (LeaveGroup).
func (m *fzMember) stop() {
	m.cancel()
	select {
	case <-m.done:
	case <-time.After(15 * time.Second):
	}
	m.cl.Close()
}

// fzWaitProcessed waits until every key in want was processed by some member.
func fzWaitProcessed(t *testing.T, want []testMsg, members ...*fzMember) {
	t.Helper()
	err := waitFor(groupWait, 50*time.Millisecond, func() error {
		missing := 0
		for _, w := range want {
			found := false
			for _, m := range members {
				m.mu.Lock()
				found = found || m.keys[string(w.Key)] > 0
				m.mu.Unlock()
			}
			if !found {
				missing++
			}
		}
		for _, m := range members {
			if _, errs := m.snapshot(); len(errs) > 0 {
				return fmt.Errorf("member %s: %v", m.name, errors.Join(errs...))
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d messages not processed yet", missing, len(want))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("consuming: %v", err)
	}
}

// fzWaitCommitted waits until the group's committed offsets (OffsetFetch)
// equal the end offsets (ListOffsets) of every partition, and returns them.
func fzWaitCommitted(t *testing.T, adm *kadm.Client, group, topic string) map[int32]int64 {
	t.Helper()
	var out map[int32]int64
	err := waitFor(20*time.Second, 100*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil || ends.Error() != nil {
			return fmt.Errorf("ListEndOffsets: %v %v", err, ends.Error())
		}
		offs, err := adm.FetchOffsetsForTopics(ctx, group, topic)
		if err != nil || offs.Error() != nil {
			return fmt.Errorf("FetchOffsets: %v %v", err, offs.Error())
		}
		out = map[int32]int64{}
		for p := int32(0); p < numPartitions; p++ {
			e, ok1 := ends.Lookup(topic, p)
			c, ok2 := offs.Lookup(topic, p)
			if !ok1 || !ok2 {
				return fmt.Errorf("p%d: end offset listed %v, commit listed %v", p, ok1, ok2)
			}
			if c.At != e.Offset {
				return fmt.Errorf("p%d: committed %d, end %d", p, c.At, e.Offset)
			}
			out[p] = e.Offset
		}
		return nil
	})
	if err != nil {
		t.Fatalf("group %s commits: %v", group, err)
	}
	return out
}

func fzProduce(t *testing.T, cl *kgo.Client, topic string, msgs []testMsg) {
	t.Helper()
	if err := cl.ProduceSync(testContext(t, 30*time.Second), fzRecords(topic, msgs)...).FirstErr(); err != nil {
		t.Fatalf("ProduceSync: %v", err)
	}
}

func hasGroup(lgs kadm.ListedGroups, group string) bool {
	_, ok := lgs[group]
	return ok
}

func TestGroupsFranzGo(t *testing.T) {
	addr := bootstrap(t)
	topic := uniqueTopic("compat-groups-franz")
	group := uniqueGroup("compat-groups-franz")
	phase := phaseTimer(t)
	adminCl := fzClient(t, addr)
	adm := kadm.NewClient(adminCl)

	ctr, err := adm.CreateTopics(testContext(t, 20*time.Second), numPartitions, int16(replicationFactor), nil, topic)
	if err != nil {
		t.Fatalf("CreateTopics: %v", err)
	}
	if r, err := ctr.On(topic, nil); err != nil || r.Err != nil {
		t.Fatalf("CreateTopics(%s): %v %v %s", topic, err, r.Err, r.ErrMessage)
	}
	fzWaitTopic(t, adminCl, topic, numPartitions)
	msgs := makeMessages(groupMessages, baseTimestamp())
	half := groupMessages / 2
	producer := fzClient(t, addr, kgo.DefaultProduceTopic(topic))

	phase("first member consumes")
	// One member owns all four partitions, processes and commits the first half.
	fzProduce(t, producer, topic, msgs[:half])
	a := startFzMember(t, addr, group, topic, "a")
	fzWaitProcessed(t, msgs[:half], a)
	fzWaitCommitted(t, adm, group, topic)
	if asg, _ := a.snapshot(); len(asg) != numPartitions {
		t.Fatalf("member a owns %v, want all %d partitions", asg, numPartitions)
	}

	phase("second member joins")
	// A second member joins: cooperative-sticky moves two partitions to it
	// (a revokes them, commits, and the group rebalances again).
	start := time.Now()
	b := startFzMember(t, addr, group, topic, "b")
	err = waitFor(groupWait, 50*time.Millisecond, func() error {
		pa, ea := a.snapshot()
		pb, eb := b.snapshot()
		if e := errors.Join(append(ea, eb...)...); e != nil {
			return e
		}
		if len(pa) != numPartitions/2 || len(pb) != numPartitions/2 {
			return fmt.Errorf("assignment a=%v b=%v, want two partitions each", pa, pb)
		}
		union := map[int32]bool{}
		for _, p := range append(pa, pb...) {
			union[p] = true
		}
		if len(union) != numPartitions {
			return fmt.Errorf("assignment a=%v b=%v overlaps", pa, pb)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("rebalance to two members: %v", err)
	}
	a.mu.Lock()
	aRevokes := a.revokes
	a.mu.Unlock()
	if aRevokes == 0 {
		t.Errorf("member a never saw OnPartitionsRevoked during the cooperative rebalance")
	}
	t.Logf("cooperative rebalance to two members took %s", time.Since(start).Round(time.Millisecond))

	phase("describe (Stable)")
	// kadm DescribeGroups: both members, the protocol, and their assignments.
	var dg kadm.DescribedGroup
	err = waitFor(20*time.Second, 100*time.Millisecond, func() error {
		dgs, err := adm.DescribeGroups(testContext(t, 10*time.Second), group)
		if err != nil {
			return err
		}
		dg = dgs[group]
		if dg.Err != nil {
			return fmt.Errorf("DescribeGroups(%s): %v %s", group, dg.Err, dg.ErrMessage)
		}
		if dg.State != "Stable" || len(dg.Members) != 2 {
			return fmt.Errorf("state %q with %d members, want Stable with 2", dg.State, len(dg.Members))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("DescribeGroups: %v", err)
	}
	if dg.ProtocolType != "consumer" || dg.Protocol != "cooperative-sticky" {
		t.Errorf("DescribeGroups: protocol type %q protocol %q, want consumer / cooperative-sticky", dg.ProtocolType, dg.Protocol)
	}
	memberIDs := map[string]bool{}
	for _, m := range []*fzMember{a, b} {
		id, gen := m.cl.GroupMetadata()
		if id == "" || gen <= 0 {
			t.Errorf("member %s: member id %q generation %d", m.name, id, gen)
		}
		memberIDs[id] = true
	}
	described := map[int32]string{}
	for _, dm := range dg.Members {
		if !memberIDs[dm.MemberID] {
			t.Errorf("DescribeGroups member %q is not one of the clients' member ids %v", dm.MemberID, memberIDs)
		}
		if !strings.HasPrefix(dm.ClientID, "sluice-compat-franz-go-") || dm.ClientHost == "" {
			t.Errorf("member %s: client id %q host %q", dm.MemberID, dm.ClientID, dm.ClientHost)
		}
		meta, ok := dm.Join.AsConsumer()
		if !ok || len(meta.Topics) != 1 || meta.Topics[0] != topic {
			t.Errorf("member %s: join metadata %+v (consumer=%v), want subscription to %s", dm.MemberID, meta, ok, topic)
		}
		asg, ok := dm.Assigned.AsConsumer()
		if !ok {
			t.Errorf("member %s: assignment is not a consumer assignment", dm.MemberID)
			continue
		}
		n := 0
		for _, at := range asg.Topics {
			if at.Topic != topic {
				t.Errorf("member %s assigned topic %q", dm.MemberID, at.Topic)
			}
			for _, p := range at.Partitions {
				if prev, dup := described[p]; dup {
					t.Errorf("partition %d assigned to both %s and %s", p, prev, dm.MemberID)
				}
				described[p] = dm.MemberID
				n++
			}
		}
		if n != numPartitions/2 {
			t.Errorf("member %s described with %d partitions, want %d", dm.MemberID, n, numPartitions/2)
		}
	}
	if len(described) != numPartitions {
		t.Errorf("described assignments cover %d partitions, want %d", len(described), numPartitions)
	}

	phase("both consume")
	// The second half: both members process their partitions and commit.
	fzProduce(t, producer, topic, msgs[half:])
	fzWaitProcessed(t, msgs, a, b)
	ends := fzWaitCommitted(t, adm, group, topic)
	total, dups := 0, 0
	for _, m := range []*fzMember{a, b} {
		m.mu.Lock()
		for _, offs := range m.processed {
			total += len(offs)
		}
		for _, n := range m.keys {
			if n > 1 {
				dups += n - 1
			}
		}
		m.mu.Unlock()
	}
	// Keys seen by both members are duplicates too.
	for k := range a.keys {
		if b.keys[k] > 0 {
			dups++
		}
	}
	t.Logf("processed %d records for %d messages (%d duplicates); end offsets %v", total, groupMessages, dups, ends)
	if dups != 0 {
		// Nothing was produced while the group rebalanced and a committed
		// before revoking, so b must resume exactly at a's commits.
		t.Errorf("%d messages processed twice although every commit preceded the rebalance", dups)
	}

	phase("lag")
	lags, err := adm.Lag(testContext(t, 10*time.Second), group)
	if err != nil {
		t.Fatalf("Lag(%s): %v", group, err)
	}
	gl := lags[group]
	if e := gl.Error(); e != nil {
		t.Fatalf("Lag(%s): %v", group, e)
	}
	if len(gl.Lag[topic]) != numPartitions {
		t.Errorf("Lag(%s) covers %d partitions of %s, want %d", group, len(gl.Lag[topic]), topic, numPartitions)
	}
	for p, l := range gl.Lag[topic] {
		if l.Err != nil || l.Lag != 0 || l.Commit.At != ends[p] || l.End.Offset != ends[p] || l.IsEmpty() {
			t.Errorf("Lag %s/%d: lag %d commit %d end %d member %v err %v; want lag 0 at %d with a member",
				topic, p, l.Lag, l.Commit.At, l.End.Offset, l.Member != nil, l.Err, ends[p])
		}
	}
	if sum := gl.Lag.Total(); sum != 0 {
		t.Errorf("total lag %d, want 0", sum)
	}

	phase("list groups")
	ctx := testContext(t, 20*time.Second)
	lgs, err := adm.ListGroups(ctx)
	if err != nil {
		t.Fatalf("ListGroups: %v", err)
	}
	if lg, ok := lgs[group]; !ok {
		t.Errorf("ListGroups does not list %s (got %d groups)", group, len(lgs))
	} else if lg.ProtocolType != "consumer" || (lg.State != "" && lg.State != "Stable") {
		t.Errorf("ListGroups: %+v, want protocol type consumer, state Stable", lg)
	}
	if stable, err := adm.ListGroups(ctx, "Stable"); err != nil || !hasGroup(stable, group) {
		t.Errorf("ListGroups(Stable) lacks %s: %v", group, err)
	}
	if empty, err := adm.ListGroups(ctx, "Empty"); err != nil || hasGroup(empty, group) {
		t.Errorf("ListGroups(Empty) lists the active group %s (err %v)", group, err)
	}

	phase("delete groups")
	// A group with members cannot be deleted.
	if dr, err := adm.DeleteGroups(ctx, group); err != nil || !errors.Is(dr[group].Err, kerr.NonEmptyGroup) {
		t.Errorf("DeleteGroups of an active group: %v %v; want NON_EMPTY_GROUP", err, dr[group].Err)
	}
	// Both leave (Close sends LeaveGroup); the group becomes Empty and keeps
	// its offsets, then DeleteGroups removes it.
	a.stop()
	b.stop()
	err = waitFor(20*time.Second, 100*time.Millisecond, func() error {
		dgs, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			return err
		}
		if d := dgs[group]; d.Err != nil || d.State != "Empty" || len(d.Members) != 0 {
			return fmt.Errorf("state %q, %d members, err %v", d.State, len(d.Members), d.Err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("group after both members left: %v; want Empty", err)
	}
	if empty, err := adm.ListGroups(ctx, "Empty"); err != nil || !hasGroup(empty, group) {
		t.Errorf("ListGroups(Empty) lacks %s after both left: %v", group, err)
	}
	fzWaitCommitted(t, adm, group, topic) // offsets outlive the members
	dr, err := adm.DeleteGroups(ctx, group)
	if err != nil || dr[group].Err != nil {
		t.Fatalf("DeleteGroups(%s): %v %v", group, err, dr[group].Err)
	}
	lgs, err = adm.ListGroups(ctx)
	if err != nil || hasGroup(lgs, group) {
		t.Errorf("ListGroups after DeleteGroups: still lists %s (err %v)", group, err)
	}
	offs, err := adm.FetchOffsetsForTopics(ctx, group, topic)
	if err != nil {
		t.Errorf("FetchOffsets after DeleteGroups: %v", err)
	}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.At >= 0 {
			t.Errorf("after DeleteGroups %s/%d still has committed offset %d", o.Topic, o.Partition, o.At)
		}
	})
	if dr, err := adm.DeleteGroups(ctx, group); err != nil || !errors.Is(dr[group].Err, kerr.GroupIDNotFound) {
		t.Errorf("DeleteGroups of a deleted group: %v %v; want GROUP_ID_NOT_FOUND", err, dr[group].Err)
	}
	phase("done")
}
