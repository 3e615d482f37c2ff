// Package faults runs a workload against a 3-broker Sluice cluster while killing and
// pausing brokers on a seeded schedule, then checks the history: no acknowledged write
// lost, none stored twice, readers and group commits never going backwards, and
// writes available again soon after the last fault heals. See README.md.
package faults

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	brokerCount   = 3
	topicName     = "faults"
	groupName     = "faults-group"
	partitions    = 6
	writerCount   = 3
	readerCount   = 2
	memberCount   = 2
	eventsDefault = 12
	// eventsMax bounds SLUICE_FAULT_EVENTS (about 10 s each).
	eventsMax = 10000
	// topicReadyWait bounds the wait for the new topic's partitions to be led by their
	// preferred replicas (a Sluice cluster hands leadership over ~10 s after creation),
	// so that faults start from the steady state.
	topicReadyWait = 45 * time.Second
	// warmup is healthy writing before the first fault.
	warmup = 5 * time.Second
	// healWait bounds the wait for every writer to write again after the last heal;
	// past the bound the checker reports it.
	healWait = healToWriteBound + 5*time.Second
	// drainWait bounds the wait for readers and the group to reach the end offsets.
	drainWait = 60 * time.Second
	// workerStopWait bounds the wait for a worker goroutine to finish once told to.
	workerStopWait = writerFlushWait + 20*time.Second
	// setupBudget and perEventOverhead feed the run-time estimate checked against
	// go test's -timeout before anything starts.
	setupBudget      = 3 * time.Minute
	perEventOverhead = 5 * time.Second
)

// envInt reads a non-negative integer environment variable, def when unset.
func envInt(t *testing.T, name string, def, max int64) int64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > max {
		t.Fatalf("%s=%q: want an integer in [0, %d]", name, v, max)
	}
	return n
}

// clientLogLevel is SLUICE_FAULT_CLIENT_LOG (error, warn, info, debug; default info).
func clientLogLevel(t *testing.T) kgo.LogLevel {
	switch v := os.Getenv("SLUICE_FAULT_CLIENT_LOG"); v {
	case "", "info":
		return kgo.LogLevelInfo
	case "debug":
		return kgo.LogLevelDebug
	case "warn":
		return kgo.LogLevelWarn
	case "error":
		return kgo.LogLevelError
	default:
		t.Fatalf("SLUICE_FAULT_CLIENT_LOG=%q: want error, warn, info or debug", v)
		return kgo.LogLevelNone
	}
}

// faultRecord is what happened to one planned event.
type faultRecord struct {
	event
	node             int32
	note             string // how the target was chosen, or why not as planned
	injected, healed time.Time
	err              error
}

// run is one TestFaults run's state.
type run struct {
	t       *testing.T
	seed    int64
	c       *cluster
	proxies *rpcProxies
	adm     *kadm.Client
	admCl   *kgo.Client
}

func TestFaults(t *testing.T) {
	// A clock seed is kept short so that it is easy to copy from a report.
	seed := envInt(t, "SLUICE_FAULT_SEED", time.Now().UnixNano()%1_000_000_000, 1<<62)
	events := int(envInt(t, "SLUICE_FAULT_EVENTS", eventsDefault, eventsMax))
	replay := fmt.Sprintf("SLUICE_FAULT_SEED=%d SLUICE_FAULT_EVENTS=%d", seed, events)
	if v := os.Getenv("SLUICE_FAULT_KINDS"); v != "" {
		replay += " SLUICE_FAULT_KINDS=" + v
	}
	fmt.Fprintf(os.Stderr, "faults: seed %d, %d events (%s replays this schedule)\n", seed, events, replay)
	t.Logf("seed %d, %d events", seed, events)

	bin, err := sluiceBin()
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	kinds := allKinds()
	if v := os.Getenv("SLUICE_FAULT_KINDS"); v != "" {
		if kinds, err = parseKinds(v); err != nil {
			t.Fatalf("SLUICE_FAULT_KINDS: %v", err)
		}
	}
	evs := plan(seed, events, partitions, kinds)
	budget := setupBudget + drainWait + healWait
	for _, e := range evs {
		budget += e.hold + e.quiet + perEventOverhead
	}
	deadline, hasDeadline := t.Deadline()
	if hasDeadline && time.Until(deadline) < budget {
		t.Fatalf("seed %d: %d events need up to about %s; run go test with -timeout %s or more",
			seed, events, budget.Round(time.Second), (budget + time.Minute).Round(time.Minute))
	}
	for i, e := range evs {
		t.Logf("plan %2d: %s", i, e)
	}

	dir, err := os.MkdirTemp("", "sluice-faults-")
	if err != nil {
		t.Fatal(err)
	}
	// The proxies first: the brokers form the cluster through them.
	proxies, err := newRPCProxies(dir, brokerCount)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxies.close) // runs after the cleanup below has stopped the brokers
	c, err := startCluster(bin, dir, brokerCount, proxies.addrs())
	if err != nil {
		t.Fatalf("seed %d: %v (logs in %s)", seed, err, dir)
	}
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(func() { _ = c.stop() }) }
	if hasDeadline {
		// go test's timeout panics without running cleanups; the brokers (in their own
		// session) would outlive it.
		w := time.AfterFunc(time.Until(deadline)-10*time.Second, func() {
			fmt.Fprintf(os.Stderr, "faults: seed %d: the test timeout is near; stopping the cluster (logs in %s)\n", seed, dir)
			stop()
		})
		defer w.Stop()
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() || os.Getenv("SLUICE_FAULT_KEEP") != "" {
			t.Logf("cluster directory (broker logs) kept: %s", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	})
	t.Logf("cluster up: %s (dir %s)", strings.Join(c.addrs, ","), dir)

	ce := clientEnv{seeds: c.addrs, logDir: dir, level: clientLogLevel(t)}
	admCl, err := kgo.NewClient(clientOpts(ce, "faults-admin")...)
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	r := &run{t: t, seed: seed, c: c, proxies: proxies, adm: kadm.NewClient(admCl), admCl: admCl}
	r.createTopic()

	// Workers.
	var (
		writers []*writer
		readers []*reader
		members []*member
	)
	for i := 0; i < writerCount; i++ {
		w, err := newWriter(i, ce, topicName, partitions)
		if err != nil {
			t.Fatal(err)
		}
		writers = append(writers, w)
	}
	for i := 0; i < readerCount; i++ {
		rd, err := newReader(i, ce, topicName, partitions)
		if err != nil {
			t.Fatal(err)
		}
		readers = append(readers, rd)
	}
	for i := 0; i < memberCount; i++ {
		m, err := newMember(i, ce, topicName, groupName)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, m)
	}
	monCl, err := kgo.NewClient(clientOpts(ce, "faults-commit-monitor")...)
	if err != nil {
		t.Fatal(err)
	}
	defer monCl.Close()
	mon := &commitMonitor{adm: kadm.NewClient(monCl), group: groupName, topic: topicName}
	leadCl, err := kgo.NewClient(clientOpts(ce, "faults-leader-monitor")...)
	if err != nil {
		t.Fatal(err)
	}
	defer leadCl.Close()
	leaders := &leaderMonitor{adm: kadm.NewClient(leadCl), topic: topicName}

	writeCtx, stopWriters := context.WithCancel(context.Background())
	readCtx, stopReaders := context.WithCancel(context.Background())
	defer stopWriters()
	defer stopReaders()
	var writersDone, readersDone sync.WaitGroup
	for _, w := range writers {
		writersDone.Add(1)
		go func() { defer writersDone.Done(); w.run(writeCtx) }()
	}
	for _, rd := range readers {
		readersDone.Add(1)
		go func() { defer readersDone.Done(); rd.run(readCtx) }()
	}
	for _, m := range members {
		readersDone.Add(1)
		go func() { defer readersDone.Done(); m.run(readCtx) }()
	}
	readersDone.Add(1)
	go func() { defer readersDone.Done(); mon.run(readCtx) }()
	readersDone.Add(1)
	go func() { defer readersDone.Done(); leaders.run(readCtx) }()

	time.Sleep(warmup)
	start := time.Now()
	var recs []faultRecord
	for i, e := range evs {
		fr := r.inject(e)
		recs = append(recs, fr)
		status := "ok"
		if fr.err != nil {
			status = "ERROR " + fr.err.Error()
		}
		t.Logf("event %2d: %s node %d (%s) at %s healed %s: %s", i, e.kind, fr.node, fr.note,
			fr.injected.UTC().Format(stampLayout), fr.healed.UTC().Format(stampLayout), status)
		if fr.err != nil {
			t.Errorf("seed %d: event %d (%s) could not be injected or healed: %v", seed, i, e, fr.err)
			break // the cluster may be short of a broker now: no more faults
		}
		time.Sleep(e.quiet)
	}
	heal := time.Now()
	if n := len(recs); n > 0 && !recs[n-1].healed.IsZero() {
		heal = recs[n-1].healed
	}
	t.Logf("faults done in %s; last heal at %s", time.Since(start).Round(time.Second), heal.UTC().Format(stampLayout))

	// Every writer must write again; then stop writing and drain.
	waitFor(healWait, func() bool {
		for _, w := range writers {
			if !w.wroteSince(heal) {
				return false
			}
		}
		return true
	})
	stopWriters()
	if !waitGroup(&writersDone, workerStopWait) {
		t.Errorf("seed %d: writers did not finish %s after being stopped", seed, workerStopWait)
	}
	end := r.endOffsets()
	t.Logf("end offsets: %v", end)
	readersBehind, groupBehind := 0, 0
	if end != nil {
		waitFor(drainWait, func() bool {
			for _, rd := range readers {
				if !rd.caughtUp(end) {
					return false
				}
			}
			return mon.caughtUp(end)
		})
		for _, rd := range readers {
			if !rd.caughtUp(end) {
				readersBehind++
				rd.mu.Lock()
				t.Logf("reader %d behind after %s: read up to %v of %v", rd.id, drainWait, rd.next, end)
				rd.mu.Unlock()
			}
		}
		if !mon.caughtUp(end) {
			groupBehind = 1
			mon.mu.Lock()
			t.Logf("group behind after %s: committed %v of %v", drainWait, mon.last, end)
			mon.mu.Unlock()
		}
	}
	stopReaders()
	if !waitGroup(&readersDone, workerStopWait) {
		t.Errorf("seed %d: readers did not finish %s after being stopped", seed, workerStopWait)
	}

	// The history, checked. Copied under the workers' locks: a worker that did not stop
	// within workerStopWait may still be running.
	h := &history{}
	for _, w := range writers {
		w.mu.Lock()
		h.acks = append(h.acks, w.acks...)
		h.batches = append(h.batches, w.batches...)
		h.failures = append(h.failures, w.failures...)
		w.mu.Unlock()
		h.healToWrite = append(h.healToWrite, w.healToWrite(heal))
	}
	for _, rd := range readers {
		rd.mu.Lock()
		h.ordered = append(h.ordered, append([]read(nil), rd.reads...))
		rd.mu.Unlock()
	}
	for _, m := range members {
		m.mu.Lock()
		h.unordered = append(h.unordered, m.reads...)
		h.commitAcks = append(h.commitAcks, m.acks...)
		m.mu.Unlock()
	}
	for _, fr := range recs {
		if fr.kind == partition && !fr.healed.IsZero() {
			h.isolations = append(h.isolations, isolation{fr.node, fr.injected, fr.healed})
		}
	}
	mon.mu.Lock()
	h.commits = append([]commitObs(nil), mon.obs...)
	mon.mu.Unlock()
	leaders.mu.Lock()
	leaderChanges := append([]leaderChange(nil), leaders.changes...)
	leaders.mu.Unlock()
	rep := check(h)
	rep.readersBehind, rep.groupBehind = readersBehind, groupBehind

	r.logDetails(recs, writers, readers, members, mon, h)
	logBadAcksByEvent(t, rep, recs)
	t.Logf("leader changes seen (Metadata every %s):", leaderPollInterval)
	for _, lc := range leaderChanges {
		t.Logf("  %s p%d leader %d epoch %d", lc.at.UTC().Format(stampLayout), lc.partition, lc.leader, lc.epoch)
	}
	t.Logf("heal-to-write per writer: %v (bound %s)", roundAll(h.healToWrite), healToWriteBound)
	t.Logf("report (seed %d, %d events):\n%s", seed, len(recs), rep)
	fmt.Fprintf(os.Stderr, "faults: seed %d: %d events, acked %d, failed %d, max heal-to-write %s, violations %v\n",
		seed, len(recs), rep.acked, rep.failed, rep.maxHealToWrite.Round(time.Millisecond), rep.violations())
	if end == nil {
		t.Errorf("seed %d: could not list end offsets after the faults", seed)
	}
	if v := rep.violations(); len(v) > 0 || os.Getenv("SLUICE_FAULT_KEEP") != "" {
		if err := dumpHistory(dir, h, recs, leaderChanges); err != nil {
			t.Logf("could not write the history: %v", err)
		} else {
			t.Logf("history written to %s (acks.tsv, reader-N.tsv, ...)", dir)
		}
	}
	if v := rep.violations(); len(v) > 0 {
		for _, n := range c.nodes() {
			t.Logf("broker %d ERROR and sluice WARN lines (last 30):\n  %s", n,
				strings.Join(c.logLines(n, 30, []string{"ERROR", "WARN sluice", "panicked"}, []string{"cannot reach broker"}), "\n  "))
		}
		t.Errorf("seed %d (%s): violations %s\n%s", seed, replay, strings.Join(v, " "), rep)
	}
}

// createTopic creates the RF=3 topic and waits (bounded) for its preferred leaders.
func (r *run) createTopic() {
	t := r.t
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := r.adm.CreateTopic(ctx, partitions, brokerCount, nil, topicName)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("seed %d: create topic: %v", r.seed, err)
	}
	ready := waitFor(topicReadyWait, func() bool {
		ps, err := r.partitionsNow()
		if err != nil || len(ps) != partitions {
			return false
		}
		for _, p := range ps {
			if len(p.Replicas) != brokerCount || p.Leader != p.Replicas[0] {
				return false
			}
		}
		return true
	})
	ps, _ := r.partitionsNow()
	for _, p := range ps.Sorted() {
		t.Logf("p%d leader %d replicas %v epoch %d", p.Partition, p.Leader, p.Replicas, p.LeaderEpoch)
	}
	if !ready {
		t.Logf("partitions not all led by their preferred replicas after %s; starting anyway", topicReadyWait)
	}
}

func (r *run) partitionsNow() (kadm.PartitionDetails, error) {
	ctx, cancel := context.WithTimeout(context.Background(), adminCallTimeout)
	defer cancel()
	md, err := r.adm.Metadata(ctx, topicName)
	if err != nil {
		return nil, err
	}
	td, ok := md.Topics[topicName]
	if !ok {
		return nil, fmt.Errorf("topic %s not in metadata", topicName)
	}
	if td.Err != nil {
		return nil, td.Err
	}
	return td.Partitions, nil
}

// controller asks every broker for the controller id (DescribeCluster) and returns the
// answer most of them give; a broker that knows no leader names itself.
func (r *run) controller() (int32, string, error) {
	votes := map[int32]int{}
	var answers []string
	for _, n := range r.c.nodes() {
		var resp kmsg.Response
		var err error
		// Twice: the first request on a connection to a broker restarted since may
		// fail (EOF) before the client redials.
		for try := 0; try < 2; try++ {
			ctx, cancel := context.WithTimeout(context.Background(), adminCallTimeout)
			resp, err = r.admCl.Broker(int(n)).Request(ctx, kmsg.NewPtrDescribeClusterRequest())
			cancel()
			if err == nil {
				break
			}
		}
		if err != nil {
			answers = append(answers, fmt.Sprintf("%d: %v", n, err))
			continue
		}
		id := resp.(*kmsg.DescribeClusterResponse).ControllerID
		votes[id]++
		answers = append(answers, fmt.Sprintf("%d says %d", n, id))
	}
	best, bestN := int32(-1), 0
	for id, k := range votes {
		if k > bestN || (k == bestN && id < best) {
			best, bestN = id, k
		}
	}
	if bestN*2 <= len(r.c.nodes()) {
		return -1, strings.Join(answers, ", "), fmt.Errorf("no majority for the controller: %s", strings.Join(answers, ", "))
	}
	return best, strings.Join(answers, ", "), nil
}

// target resolves which broker an event hits. When the cluster cannot say (no leader
// known), it falls back to a broker chosen by pick, and says so in the note.
func (r *run) target(e event) (int32, string) {
	nodes := r.c.nodes()
	fallback := nodes[e.pick%len(nodes)]
	switch e.kind {
	case killController:
		id, answers, err := r.controller()
		if err != nil || id < 1 || int(id) > len(nodes) {
			return fallback, fmt.Sprintf("controller unknown (%s); broker %d instead", answers, fallback)
		}
		return id, "controller leader (" + answers + ")"
	case pauseBroker:
		return fallback, "any broker"
	case killCoordinator:
		ctx, cancel := context.WithTimeout(context.Background(), adminCallTimeout)
		defer cancel()
		resp := r.adm.FindGroupCoordinators(ctx, groupName)
		co, ok := resp[groupName]
		if !ok || co.Err != nil || co.NodeID < 1 || int(co.NodeID) > len(nodes) {
			return fallback, fmt.Sprintf("coordinator unknown (%v); broker %d instead", co.Err, fallback)
		}
		return co.NodeID, "group coordinator"
	}
	ps, err := r.partitionsNow()
	p, ok := ps[e.partition]
	if err != nil || !ok || p.Leader < 1 {
		return fallback, fmt.Sprintf("p%d has no known leader (%v); broker %d instead", e.partition, err, fallback)
	}
	// slow-disk hits the leader on even picks, a follower on odd ones.
	if e.kind == killFollower || (e.kind == slowDisk && e.pick%2 == 1) {
		var fs []int32
		for _, n := range p.Replicas {
			if n != p.Leader {
				fs = append(fs, n)
			}
		}
		if len(fs) == 0 {
			return fallback, fmt.Sprintf("p%d has no follower; broker %d instead", e.partition, fallback)
		}
		i := e.pick
		if e.kind == slowDisk {
			i /= 2 // its low bit chose the role
		}
		return fs[i%len(fs)], fmt.Sprintf("p%d follower (leader %d epoch %d)", e.partition, p.Leader, p.LeaderEpoch)
	}
	return p.Leader, fmt.Sprintf("p%d leader (epoch %d)", e.partition, p.LeaderEpoch)
}

// inject applies one event and heals it: restart after a kill, SIGCONT after a pause,
// the third replica back after a reassignment, the links back after a partition, no
// sync delay after a slow disk.
func (r *run) inject(e event) faultRecord {
	if e.kind == reassign {
		return r.injectReassign(e)
	}
	fr := faultRecord{event: e}
	fr.node, fr.note = r.target(e)
	fr.injected = time.Now()
	switch e.kind {
	case partition:
		closed := r.proxies.isolate(fr.node)
		time.Sleep(e.hold)
		fr.healed = time.Now()
		held := r.proxies.heal()
		fr.note += fmt.Sprintf("; isolated: %d links closed, %d attempts held", closed, held)
		return fr
	case slowDisk:
		fr.note += fmt.Sprintf("; fdatasync +%s", e.delay)
		if fr.err = r.c.setSyncDelay(fr.node, e.delay); fr.err != nil {
			return fr
		}
		time.Sleep(e.hold)
		fr.healed = time.Now()
		fr.err = r.c.setSyncDelay(fr.node, 0)
		return fr
	}
	if e.kind.kills() {
		if fr.err = r.c.kill(fr.node); fr.err != nil {
			return fr
		}
		time.Sleep(e.hold)
		fr.healed = time.Now()
		fr.err = r.c.restart(fr.node)
		return fr
	}
	if fr.err = r.c.pause(fr.node); fr.err != nil {
		return fr
	}
	time.Sleep(e.hold)
	fr.healed = time.Now()
	fr.err = r.c.resume(fr.node)
	return fr
}

// endOffsets lists the topic's high watermarks, retrying (bounded); nil if it cannot.
func (r *run) endOffsets() map[int32]int64 {
	var end map[int32]int64
	waitFor(30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), adminCallTimeout)
		defer cancel()
		lo, err := r.adm.ListEndOffsets(ctx, topicName)
		if err != nil || lo.Error() != nil {
			return false
		}
		m := map[int32]int64{}
		lo.Each(func(o kadm.ListedOffset) { m[o.Partition] = o.Offset })
		if len(m) != partitions {
			return false
		}
		end = m
		return true
	})
	return end
}

// logDetails logs what helps to read a failure: per event, how long each partition
// went without a new write; the clients' errors; the readers' longest stalls.
func (r *run) logDetails(recs []faultRecord, writers []*writer, readers []*reader, members []*member, mon *commitMonitor, h *history) {
	t := r.t
	acks := append([]ack(nil), h.acks...)
	sort.Slice(acks, func(i, j int) bool { return acks[i].at.Before(acks[j].at) })
	for i, fr := range recs {
		inj, injP := slowestPartition(acks, fr.injected)
		heal, healP := slowestPartition(acks, fr.healed)
		t.Logf("event %2d %-16s node %d hold %-7s: every partition wrote again %s after injection (p%d last), %s after heal (p%d last)",
			i, fr.kind, fr.node, fr.hold.Round(time.Millisecond), inj.Round(time.Millisecond), injP,
			heal.Round(time.Millisecond), healP)
	}
	for _, w := range writers {
		w.mu.Lock()
		t.Logf("writer %d: %d acked, %d failed, %d ticks skipped (in-flight limit)", w.id, len(w.acks), len(w.failures), w.skipped)
		w.mu.Unlock()
		logErrs(t, fmt.Sprintf("writer %d", w.id), &w.errs)
	}
	for _, rd := range readers {
		d, from := rd.longestStall()
		rd.mu.Lock()
		n := len(rd.reads)
		rd.mu.Unlock()
		t.Logf("reader %d: %d records; longest time without records %s from %s", rd.id, n,
			d.Round(time.Millisecond), from.UTC().Format(stampLayout))
		logErrs(t, fmt.Sprintf("reader %d", rd.id), &rd.errs)
	}
	for _, m := range members {
		m.mu.Lock()
		t.Logf("member %d: %d records, %d partition commits acknowledged", m.id, m.polled, len(m.acks))
		m.mu.Unlock()
		logErrs(t, fmt.Sprintf("member %d", m.id), &m.errs)
	}
	t.Logf("commit monitor: %d observations", len(h.commits))
	logErrs(t, "commit monitor", &mon.errs)
}

// logBadAcksByEvent says, per fault event, how many lost or misplaced acks were
// acknowledged after it began and before the next one: which fault each followed.
func logBadAcksByEvent(t *testing.T, rep *report, recs []faultRecord) {
	if len(rep.badAcks) == 0 {
		return
	}
	kinds := make([]string, 0, len(rep.badAcks))
	for k := range rep.badAcks {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		counts := make([]int, len(recs)+1) // index 0: before the first event
		for _, a := range rep.badAcks[k] {
			i := sort.Search(len(recs), func(i int) bool { return recs[i].injected.After(a.at) })
			counts[i]++
		}
		for i, n := range counts {
			if n == 0 {
				continue
			}
			if i == 0 {
				t.Logf("%s: %d acknowledged before the first event", k, n)
				continue
			}
			fr := recs[i-1]
			t.Logf("%s: %d acknowledged after event %d (%s node %d, %s)", k, n, i-1, fr.kind, fr.node, fr.note)
		}
	}
}

// slowestPartition: for each partition, the time from `from` to the first ack of a record
// sent at or after it; returns the longest and its partition (-1 if one never wrote).
// acks must be sorted by ack time.
func slowestPartition(acks []ack, from time.Time) (time.Duration, int32) {
	var worst time.Duration
	worstP := int32(-1)
	for p := int32(0); p < partitions; p++ {
		d := time.Duration(-1)
		for _, a := range acks {
			if a.partition == p && !a.sentAt.Before(from) {
				d = a.at.Sub(from)
				break
			}
		}
		if d < 0 {
			return -1, p
		}
		if d > worst {
			worst, worstP = d, p
		}
	}
	return worst, worstP
}

func logErrs(t *testing.T, who string, l *errLog) {
	s := l.summary()
	if len(s) == 0 {
		return
	}
	const shown = 8
	if len(s) > shown {
		s = append(s[:shown], fmt.Sprintf("... %d more kinds", len(s)-shown))
	}
	l.mu.Lock()
	first := l.first
	if len(first) > 3 {
		first = first[:3]
	}
	l.mu.Unlock()
	t.Logf("%s errors:\n  %s\n  first: %s", who, strings.Join(s, "\n  "), strings.Join(first, "; "))
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// waitFor polls cond every 100 ms until it holds or limit passes; it reports which.
func waitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitGroup waits for wg at most limit; false if it timed out.
func waitGroup(wg *sync.WaitGroup, limit time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(limit):
		return false
	}
}
