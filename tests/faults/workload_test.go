package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	// writeInterval paces each writer: a record every 5 ms, about 200/s per writer.
	writeInterval = 5 * time.Millisecond
	// writerInFlightMax bounds a writer's unacknowledged records; past it the writer
	// skips ticks instead of buffering without end while a partition has no leader.
	writerInFlightMax = 256
	// recordDeliveryTimeout is when a producer gives up on a record (delivery.timeout.ms):
	// long enough to ride out one fault, short enough that a stuck record is reported.
	recordDeliveryTimeout = 30 * time.Second
	// produceRequestTimeout and requestTimeoutOverhead bound one request, so that a
	// request sent to a paused broker is abandoned in seconds, not the default ~40 s.
	produceRequestTimeout  = 5 * time.Second
	requestTimeoutOverhead = 3 * time.Second
	// metadataMinAge lets clients look for a new leader quickly after NOT_LEADER (the
	// default 5 s would dominate the measured heal-to-write time).
	metadataMinAge = 500 * time.Millisecond
	// writerFlushWait bounds the final flush; records still pending then are aborted
	// (and so recorded as failed).
	writerFlushWait = 40 * time.Second
	// errorLogMax bounds how many client errors each worker keeps with their times, and
	// errorKindsMax how many distinct ones it counts apart.
	errorLogMax   = 200
	errorKindsMax = 100
	// pollWait bounds one poll, so that loops see their stop signal.
	pollWait = time.Second
	// groupCommitTimeout bounds one synchronous offset commit.
	groupCommitTimeout = 10 * time.Second
	// commitPollInterval paces the committed-offset monitor.
	commitPollInterval = 500 * time.Millisecond
	// leaderPollInterval paces the leader monitor.
	leaderPollInterval = 250 * time.Millisecond
	// adminCallTimeout bounds one admin request (Metadata, ListOffsets, OffsetFetch).
	adminCallTimeout = 5 * time.Second
)

// clientEnv is what every client is made with: where the brokers are, and where the
// clients' own logs go (one file per client, next to the broker logs).
type clientEnv struct {
	seeds  []string
	logDir string
	level  kgo.LogLevel
}

// clientOpts are the options every client here shares.
func clientOpts(ce clientEnv, id string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(ce.seeds...),
		kgo.WithLogger(newFileLogger(filepath.Join(ce.logDir, id+".log"), ce.level)),
		kgo.ClientID(id),
		kgo.DialTimeout(3 * time.Second),
		kgo.RequestTimeoutOverhead(requestTimeoutOverhead),
		kgo.MetadataMinAge(metadataMinAge),
		kgo.RetryTimeout(20 * time.Second),
	}
}

// errLog keeps a worker's client errors: the first errorLogMax with times, all counted.
type errLog struct {
	mu     sync.Mutex
	first  []string
	counts map[string]int
}

func (l *errLog) add(what string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = map[string]int{}
	}
	key := what + ": " + err.Error()
	if _, known := l.counts[key]; !known && len(l.counts) >= errorKindsMax {
		key = what + ": (other errors)"
	}
	l.counts[key]++
	if len(l.first) < errorLogMax {
		l.first = append(l.first, time.Now().UTC().Format(stampLayout)+" "+key)
	}
}

// summary is "N× error" lines, most frequent first.
func (l *errLog) summary() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]string, 0, len(l.counts))
	for k := range l.counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return l.counts[keys[i]] > l.counts[keys[j]] })
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%d× %s", l.counts[k], k)
	}
	return out
}

// writer is one idempotent acks=all producer; it writes value(id, seq) for seq = 0, 1, ...
// round-robin over the partitions and records every outcome.
type writer struct {
	id    int
	cl    *kgo.Client
	parts int32
	errs  errLog

	mu       sync.Mutex
	acks     []ack
	batches  []batchAck // from the client's produce hook: which broker acknowledged what
	failures []failure
	lastSent time.Time // sentAt of the latest-sent acked record
	skipped  int       // ticks skipped because writerInFlightMax were pending
}

func newWriter(id int, ce clientEnv, topic string, parts int32) (*writer, error) {
	// Writers log at debug at least: only there does franz-go name each partition's
	// error code in a produce response (retrying@offset,count(ERROR)).
	wce := ce
	wce.level = max(ce.level, kgo.LogLevelDebug)
	w := &writer{id: id, parts: parts}
	opts := append(clientOpts(wce, fmt.Sprintf("faults-writer-%d", id)),
		kgo.WithHooks(batchHook{w}),
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RecordDeliveryTimeout(recordDeliveryTimeout),
		kgo.ProduceRequestTimeout(produceRequestTimeout),
		kgo.ProducerLinger(2*time.Millisecond),
		kgo.MaxBufferedRecords(writerInFlightMax*2),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	w.cl = cl
	return w, nil
}

// batchHook records, per batch a produce response acknowledged, the broker that answered:
// the record promises do not say, and a broker cut off from the others must not answer.
type batchHook struct{ w *writer }

func (h batchHook) OnProduceBatchWritten(meta kgo.BrokerMetadata, _ string, partition int32, m kgo.ProduceBatchMetrics) {
	// franz-go calls this from a goroutine after the response: at is a little late,
	// never early.
	now := time.Now()
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	h.w.batches = append(h.w.batches, batchAck{h.w.id, meta.NodeID, partition, m.NumRecords, now})
}

// run writes until ctx ends, then flushes (bounded) and closes the client.
func (w *writer) run(ctx context.Context) {
	sem := make(chan struct{}, writerInFlightMax)
	tick := time.NewTicker(writeInterval)
	defer tick.Stop()
	seq := 0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			w.mu.Lock()
			w.skipped++
			w.mu.Unlock()
			continue
		}
		s, p := seq, int32(seq%int(w.parts))
		seq++
		sentAt := time.Now()
		rec := &kgo.Record{Partition: p, Value: []byte(value(w.id, s))}
		// The context of Produce must outlive ctx: cancelling it would fail buffered
		// records that may still be delivered, which is not the outcome under test.
		w.cl.Produce(context.Background(), rec, func(r *kgo.Record, err error) {
			<-sem
			now := time.Now()
			w.mu.Lock()
			defer w.mu.Unlock()
			if err != nil {
				w.failures = append(w.failures, failure{w.id, s, p, err.Error(), now})
				w.errs.add("produce", err)
				return
			}
			w.acks = append(w.acks, ack{w.id, s, r.Partition, r.Offset, sentAt, now})
			if sentAt.After(w.lastSent) {
				w.lastSent = sentAt
			}
		})
	}
	fctx, cancel := context.WithTimeout(context.Background(), writerFlushWait)
	defer cancel()
	if err := w.cl.Flush(fctx); err != nil {
		w.errs.add("flush", err)
		actx, acancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = w.cl.AbortBufferedRecords(actx)
		acancel()
	}
	w.cl.Close()
}

// wroteSince: some record sent at or after t has been acknowledged.
func (w *writer) wroteSince(t time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.lastSent.Before(t)
}

// healToWrite is the time from heal to the ack of the first record sent after it, or -1.
func (w *writer) healToWrite(heal time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	best := time.Duration(-1)
	for _, a := range w.acks {
		if !a.sentAt.Before(heal) {
			if d := a.at.Sub(heal); best < 0 || d < best {
				best = d
			}
		}
	}
	return best
}

// reader consumes every partition from the start, directly (no group), and records
// each record in poll order.
type reader struct {
	id   int
	cl   *kgo.Client
	errs errLog

	mu    sync.Mutex
	reads []read
	next  map[int32]int64 // one past the highest offset read, per partition
}

func newReader(id int, ce clientEnv, topic string, parts int32) (*reader, error) {
	start := map[int32]kgo.Offset{}
	for p := int32(0); p < parts; p++ {
		start[p] = kgo.NewOffset().AtStart()
	}
	opts := append(clientOpts(ce, fmt.Sprintf("faults-reader-%d", id)),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	return &reader{id: id, cl: cl, next: map[int32]int64{}}, nil
}

func (r *reader) run(ctx context.Context) {
	defer r.cl.Close()
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, pollWait)
		fs := r.cl.PollFetches(pctx)
		cancel()
		now := time.Now()
		fs.EachError(func(_ string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				r.errs.add(fmt.Sprintf("fetch p%d", p), err)
			}
		})
		r.mu.Lock()
		fs.EachRecord(func(rec *kgo.Record) {
			r.reads = append(r.reads, read{rec.Partition, rec.Offset, string(rec.Value), now})
			if rec.Offset+1 > r.next[rec.Partition] {
				r.next[rec.Partition] = rec.Offset + 1
			}
		})
		r.mu.Unlock()
	}
}

// caughtUp: for every partition, the reader has read up to end (exclusive).
func (r *reader) caughtUp(end map[int32]int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, e := range end {
		if r.next[p] < e {
			return false
		}
	}
	return true
}

// longestStall is the longest time between two polls that returned records, and when
// it began: how long reads were unavailable at worst.
func (r *reader) longestStall() (time.Duration, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var best time.Duration
	var from time.Time
	for i := 1; i < len(r.reads); i++ {
		if d := r.reads[i].at.Sub(r.reads[i-1].at); d > best {
			best, from = d, r.reads[i-1].at
		}
	}
	return best, from
}

// member is one consumer of the group: it commits what each poll returned before it
// lets a rebalance happen, and records the commits the coordinator acknowledged.
type member struct {
	id   int
	cl   *kgo.Client
	errs errLog

	mu     sync.Mutex
	reads  []read
	acks   []commitAck
	polled int
}

func newMember(id int, ce clientEnv, topic, group string) (*member, error) {
	opts := append(clientOpts(ce, fmt.Sprintf("faults-member-%d", id)),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500*time.Millisecond),
		kgo.SessionTimeout(10*time.Second),
		kgo.HeartbeatInterval(time.Second),
		kgo.RebalanceTimeout(20*time.Second),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	return &member{id: id, cl: cl}, nil
}

func (m *member) run(ctx context.Context) {
	// Leaving the group commits nothing: every commit was made synchronously already.
	defer m.cl.Close()
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, pollWait)
		fs := m.cl.PollRecords(pctx, 1000)
		cancel()
		now := time.Now()
		fs.EachError(func(_ string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				m.errs.add(fmt.Sprintf("group fetch p%d", p), err)
			}
		})
		m.mu.Lock()
		fs.EachRecord(func(rec *kgo.Record) {
			m.reads = append(m.reads, read{rec.Partition, rec.Offset, string(rec.Value), now})
			m.polled++
		})
		m.mu.Unlock()
		m.commit()
		m.cl.AllowRebalance()
	}
}

// commit commits the offsets polled so far, synchronously, recording each partition the
// coordinator acknowledged without an error.
func (m *member) commit() {
	offs := m.cl.UncommittedOffsets()
	if len(offs) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(context.Background(), groupCommitTimeout)
	defer cancel()
	m.cl.CommitOffsetsSync(cctx, offs, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		now := time.Now()
		if err != nil {
			m.errs.add("commit", err)
			return
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if e := kerr.ErrorForCode(p.ErrorCode); e != nil {
					m.errs.add(fmt.Sprintf("commit p%d", p.Partition), e)
					continue
				}
				if o, ok := offs[t.Topic][p.Partition]; ok {
					m.acks = append(m.acks, commitAck{now, p.Partition, o.Offset})
				}
			}
		}
	})
}

// commitMonitor asks for the group's committed offsets, one request at a time, and
// records every answer in order.
type commitMonitor struct {
	adm   *kadm.Client
	group string
	topic string
	errs  errLog

	mu   sync.Mutex
	obs  []commitObs
	last map[int32]int64
}

func (c *commitMonitor) run(ctx context.Context) {
	tick := time.NewTicker(commitPollInterval)
	defer tick.Stop()
	for {
		c.poll()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (c *commitMonitor) poll() {
	sent := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), adminCallTimeout)
	defer cancel()
	resp, err := c.adm.FetchOffsets(ctx, c.group)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		c.errs.add("offset fetch", err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last = map[int32]int64{}
	}
	var parts []int32
	for p := range resp[c.topic] {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	for _, p := range parts {
		o := resp[c.topic][p]
		if o.Err != nil || o.At < 0 {
			continue
		}
		c.obs = append(c.obs, commitObs{sent, p, o.At})
		c.last[p] = o.At
	}
}

// caughtUp: the latest observation of every partition is at least end.
func (c *commitMonitor) caughtUp(end map[int32]int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, e := range end {
		if c.last[p] < e {
			return false
		}
	}
	return true
}

// leaderChange is a partition's leader or epoch as Metadata first showed it.
type leaderChange struct {
	at        time.Time // when the Metadata request that showed it was sent
	partition int32
	leader    int32
	epoch     int32
}

// leaderMonitor records each change of the topic's partition leaders, to line up
// violations with leader changes (the broker logs little of them at INFO).
type leaderMonitor struct {
	adm   *kadm.Client
	topic string

	mu      sync.Mutex
	changes []leaderChange
	last    map[int32]leaderChange
}

func (l *leaderMonitor) run(ctx context.Context) {
	tick := time.NewTicker(leaderPollInterval)
	defer tick.Stop()
	for {
		l.poll()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (l *leaderMonitor) poll() {
	sent := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), adminCallTimeout)
	defer cancel()
	md, err := l.adm.Metadata(ctx, l.topic)
	if err != nil {
		return
	}
	td, ok := md.Topics[l.topic]
	if !ok || td.Err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[int32]leaderChange{}
	}
	for _, p := range td.Partitions.Sorted() {
		c := leaderChange{sent, p.Partition, p.Leader, p.LeaderEpoch}
		if prev, ok := l.last[p.Partition]; !ok || prev.leader != c.leader || prev.epoch != c.epoch {
			l.changes = append(l.changes, c)
			l.last[p.Partition] = c
		}
	}
}

// fileLogger is a kgo.Logger writing timestamped lines to a file: what the client saw
// (error codes, retries, leader moves) is the other half of a bug report.
type fileLogger struct {
	level kgo.LogLevel
	mu    sync.Mutex
	w     io.Writer
}

func newFileLogger(path string, level kgo.LogLevel) kgo.Logger {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return kgo.BasicLogger(io.Discard, kgo.LogLevelNone, nil)
	}
	// The file stays open for the life of the test process, like the client.
	return &fileLogger{level: level, w: f}
}

func (l *fileLogger) Level() kgo.LogLevel { return l.level }

func (l *fileLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var b strings.Builder
	b.WriteString(time.Now().UTC().Format("15:04:05.000000"))
	b.WriteString(" ")
	b.WriteString(level.String())
	b.WriteString(" ")
	b.WriteString(msg)
	for i := 0; i+1 < len(keyvals); i += 2 {
		fmt.Fprintf(&b, "; %v: %v", keyvals[i], keyvals[i+1])
	}
	b.WriteString("\n")
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.w, b.String())
}
