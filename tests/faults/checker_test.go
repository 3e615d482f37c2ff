package faults

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// The checker compares what the writers were told (acks) with what readers saw. It is
// pure: it takes a finished history and returns counts, so it is unit-tested apart from
// any broker (checker_unit_test.go).

const (
	// electionTimeoutMax is the broker's upper Raft election timeout (1–2 s).
	electionTimeoutMax = 2 * time.Second
	// healSlack is what a client is allowed on top of an election to find the new
	// leader and get a write through: metadata refresh, backoff, a retried request.
	healSlack = 15 * time.Second
	// healToWriteBound is the most the time from the last heal to every writer's
	// first successful new write may take.
	healToWriteBound = electionTimeoutMax + healSlack
	// minorityAckGrace is how long after a partition fault began a batch acknowledged by
	// the isolated broker is still allowed: a batch committed just before the cut may be
	// answered just after it (the commit is learned, applied and answered, and the client
	// hook runs, a little later), and the cut starts just after its recorded time.
	minorityAckGrace = time.Second
	// examplesMax bounds how many examples of each violation a report keeps.
	examplesMax = 5
	// stampLayout is how reports print times, to match them with broker log lines (UTC).
	stampLayout = "15:04:05.000"
)

// value is what a writer puts in a record: which writer, which of its records.
func value(writer, seq int) string { return fmt.Sprintf("w%03d-s%010d", writer, seq) }

func parseValue(v string) (writer, seq int, ok bool) {
	n, err := fmt.Sscanf(v, "w%03d-s%010d", &writer, &seq)
	return writer, seq, err == nil && n == 2 && v == value(writer, seq)
}

// ack is one acknowledged write.
type ack struct {
	writer, seq int
	partition   int32
	offset      int64
	sentAt, at  time.Time
}

// batchAck is one produced batch a broker acknowledged, from the writer's client hook.
type batchAck struct {
	writer    int
	broker    int32 // the node id that answered
	partition int32
	records   int
	at        time.Time // when the hook ran, just after the response arrived
}

// isolation is a partition fault: node was cut off from every other broker's RPC from
// from (just before the cut) to to (just before the heal).
type isolation struct {
	node     int32
	from, to time.Time
}

// failure is one write the producer gave up on: it may or may not be stored.
type failure struct {
	writer, seq int
	partition   int32
	err         string
	at          time.Time
}

// read is one record as a reader's poll returned it.
type read struct {
	partition int32
	offset    int64
	value     string
	at        time.Time
}

// commitObs is a group's committed offset for a partition as OffsetFetch answered it;
// a slice of them is in the order the (sequential) requests were made.
type commitObs struct {
	at        time.Time // when the OffsetFetch request was sent
	partition int32
	offset    int64
}

// commitAck is an offset commit the coordinator acknowledged.
type commitAck struct {
	at        time.Time // when the acknowledgement arrived
	partition int32
	offset    int64
}

type history struct {
	acks     []ack
	failures []failure
	// ordered are the sequential readers' poll sequences, one per reader: their order
	// is checked. unordered are more reads (group members) whose order may go back
	// legitimately (a rebalance resumes from a commit), used only for values.
	ordered    [][]read
	unordered  []read
	commits    []commitObs
	commitAcks []commitAck
	// healToWrite is, per writer, the time from the last heal to the ack of its first
	// write sent after it; negative when there was none.
	healToWrite []time.Duration
	// batches are the acknowledged batches with the broker that answered, isolations the
	// partition faults: a broker alone cannot commit an acks=all write.
	batches    []batchAck
	isolations []isolation
}

type pOff struct {
	partition int32
	offset    int64
}

// report holds the checker's counts; the violation fields must all be zero.
type report struct {
	acked, failed, reads, distinctOffsets int

	lostMissing     int // acked values stored nowhere, their offset never read
	lostOverwritten int // acked values stored nowhere, their offset read with another value
	misplaced       int // acked values stored, but not at the offset the ack named
	duplicates      int // (writer, seq) stored at more than one offset
	conflicts       int // offsets read with two different values
	backwards       int // a reader's offsets for a partition not increasing
	commitBackwards int // a committed offset lower than an earlier observation of it
	commitLost      int // an observation lower than a commit acknowledged before it was asked
	foreign         int // values no writer wrote
	healMissing     int // writers with no successful write after the last heal
	healOverBound   int // writers whose heal-to-write time exceeds healToWriteBound
	readersBehind   int // readers that did not reach the end offsets (set by the test)
	groupBehind     int // 1 when the group's commits did not reach them (set by the test)
	minorityAcks    int // batches acknowledged by a broker while a partition fault isolated it

	minorityAcksInGrace int // ... within minorityAckGrace of the cut (information)

	gaps           int // a reader skipped offsets (information: a gap loses no ack by itself)
	failedButRead  int // failed writes that are stored anyway (allowed: failure is unknown outcome)
	maxHealToWrite time.Duration

	examples map[string][]string
	// badAcks are the acks behind the lost_* and ack_offset_wrong counts, by kind, so
	// that the test can say which fault event each followed.
	badAcks map[string][]ack
}

func (r *report) example(kind, format string, args ...any) {
	if r.examples == nil {
		r.examples = map[string][]string{}
	}
	if len(r.examples[kind]) < examplesMax {
		r.examples[kind] = append(r.examples[kind], fmt.Sprintf(format, args...))
	}
}

func (r *report) bad(kind string, a ack) {
	if r.badAcks == nil {
		r.badAcks = map[string][]ack{}
	}
	r.badAcks[kind] = append(r.badAcks[kind], a)
}

// violations lists the non-zero violation counts as "kind=N"; empty means a pass.
func (r *report) violations() []string {
	var v []string
	for _, c := range []struct {
		name string
		n    int
	}{
		{"lost_missing", r.lostMissing},
		{"lost_overwritten", r.lostOverwritten},
		{"ack_offset_wrong", r.misplaced},
		{"duplicates", r.duplicates},
		{"offset_conflicts", r.conflicts},
		{"reader_backwards", r.backwards},
		{"commit_backwards", r.commitBackwards},
		{"commit_lost", r.commitLost},
		{"foreign_values", r.foreign},
		{"heal_no_write", r.healMissing},
		{"heal_over_bound", r.healOverBound},
		{"readers_behind", r.readersBehind},
		{"group_behind", r.groupBehind},
		{"minority_acks", r.minorityAcks},
	} {
		if c.n != 0 {
			v = append(v, fmt.Sprintf("%s=%d", c.name, c.n))
		}
	}
	return v
}

func (r *report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "acked=%d failed=%d reads=%d offsets=%d\n", r.acked, r.failed, r.reads, r.distinctOffsets)
	fmt.Fprintf(&b, "lost_missing=%d lost_overwritten=%d ack_offset_wrong=%d duplicates=%d offset_conflicts=%d reader_backwards=%d\n",
		r.lostMissing, r.lostOverwritten, r.misplaced, r.duplicates, r.conflicts, r.backwards)
	fmt.Fprintf(&b, "commit_backwards=%d commit_lost=%d foreign_values=%d heal_no_write=%d heal_over_bound=%d\n",
		r.commitBackwards, r.commitLost, r.foreign, r.healMissing, r.healOverBound)
	fmt.Fprintf(&b, "readers_behind=%d group_behind=%d minority_acks=%d\n", r.readersBehind, r.groupBehind, r.minorityAcks)
	fmt.Fprintf(&b, "info: reader_gaps=%d failed_but_stored=%d minority_acks_in_grace=%d max_heal_to_write=%s (bound %s)",
		r.gaps, r.failedButRead, r.minorityAcksInGrace, r.maxHealToWrite.Round(time.Millisecond), healToWriteBound)
	kinds := make([]string, 0, len(r.examples))
	for k := range r.examples {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		for _, e := range r.examples[k] {
			fmt.Fprintf(&b, "\n  %s: %s", k, e)
		}
	}
	return b.String()
}

func check(h *history) *report {
	r := &report{acked: len(h.acks), failed: len(h.failures)}

	// What each offset was read as, and where each value was read.
	stored := map[pOff]string{}
	where := map[string]map[pOff]bool{}
	note := func(rd read) {
		r.reads++
		at := pOff{rd.partition, rd.offset}
		if prev, ok := stored[at]; !ok {
			stored[at] = rd.value
		} else if prev != rd.value {
			r.conflicts++
			r.example("offset_conflicts", "p%d@%d read as %q and %q", rd.partition, rd.offset, prev, rd.value)
		}
		if where[rd.value] == nil {
			where[rd.value] = map[pOff]bool{}
		}
		where[rd.value][at] = true
	}
	for i, seq := range h.ordered {
		last := map[int32]int64{}
		for _, rd := range seq {
			note(rd)
			if prev, ok := last[rd.partition]; ok {
				if rd.offset <= prev {
					r.backwards++
					r.example("reader_backwards", "reader %d p%d: %d after %d at %s",
						i, rd.partition, rd.offset, prev, rd.at.Format(stampLayout))
				} else if rd.offset > prev+1 {
					r.gaps++
					r.example("info_gaps", "reader %d p%d: %d after %d", i, rd.partition, rd.offset, prev)
				}
			}
			last[rd.partition] = rd.offset
		}
	}
	for _, rd := range h.unordered {
		note(rd)
	}
	r.distinctOffsets = len(stored)

	// Conflicting offsets would count here once per extra value; count each value once.
	values := make([]string, 0, len(where))
	for v := range where {
		values = append(values, v)
	}
	sort.Strings(values)
	for _, v := range values {
		if _, _, ok := parseValue(v); !ok {
			r.foreign++
			r.example("foreign_values", "%q", v)
			continue
		}
		if n := len(where[v]); n > 1 {
			r.duplicates++
			r.example("duplicates", "%s at %s", v, locations(where[v]))
		}
	}

	for _, a := range h.acks {
		v := value(a.writer, a.seq)
		got, ok := stored[pOff{a.partition, a.offset}]
		switch {
		case ok && got == v:
		case len(where[v]) > 0:
			// Stored, but not where the ack said: the client was told a wrong offset.
			r.misplaced++
			r.bad("ack_offset_wrong", a)
			r.example("ack_offset_wrong", "%s acked at p%d@%d (%s) but read at %s", v, a.partition, a.offset,
				a.at.Format(stampLayout), locations(where[v]))
		case !ok:
			r.lostMissing++
			r.bad("lost_missing", a)
			r.example("lost_missing", "%s acked at p%d@%d (%s), stored nowhere, offset never read", v, a.partition, a.offset, a.at.Format(stampLayout))
		default:
			r.lostOverwritten++
			r.bad("lost_overwritten", a)
			r.example("lost_overwritten", "%s acked at p%d@%d (%s), stored nowhere, offset read as %q", v, a.partition, a.offset, a.at.Format(stampLayout), got)
		}
	}
	for _, f := range h.failures {
		if len(where[value(f.writer, f.seq)]) > 0 {
			r.failedButRead++
		}
	}

	// Committed offsets, per partition, in observation order.
	lastObs := map[int32]commitObs{}
	for _, o := range h.commits {
		if prev, ok := lastObs[o.partition]; ok && o.offset < prev.offset {
			r.commitBackwards++
			r.example("commit_backwards", "p%d: %d at %s after %d at %s", o.partition,
				o.offset, o.at.Format(stampLayout), prev.offset, prev.at.Format(stampLayout))
		}
		lastObs[o.partition] = o
	}
	// An observation asked after a commit was acknowledged must show at least it.
	acks := append([]commitAck(nil), h.commitAcks...)
	sort.Slice(acks, func(i, j int) bool { return acks[i].at.Before(acks[j].at) })
	// h.commits is in request order, so one sweep over the acks sorted by time does.
	best := map[int32]commitAck{}
	next := 0
	for _, o := range h.commits {
		for ; next < len(acks) && acks[next].at.Before(o.at); next++ {
			a := acks[next]
			if b, ok := best[a.partition]; !ok || a.offset > b.offset {
				best[a.partition] = a
			}
		}
		if b, ok := best[o.partition]; ok && o.offset < b.offset {
			r.commitLost++
			r.example("commit_lost", "p%d: %d asked at %s after commit of %d acked at %s", o.partition,
				o.offset, o.at.Format(stampLayout), b.offset, b.at.Format(stampLayout))
		}
	}

	for w, d := range h.healToWrite {
		switch {
		case d < 0:
			r.healMissing++
			r.example("heal_no_write", "writer %d", w)
		case d > healToWriteBound:
			r.healOverBound++
			r.example("heal_over_bound", "writer %d: %s", w, d.Round(time.Millisecond))
		}
		if d > r.maxHealToWrite {
			r.maxHealToWrite = d
		}
	}

	// A broker cut off from both others is a minority of one: it cannot commit, so past
	// the grace it must not acknowledge anything until the heal.
	for _, b := range h.batches {
		for _, iso := range h.isolations {
			if b.broker != iso.node || !b.at.After(iso.from) || !b.at.Before(iso.to) {
				continue
			}
			if b.at.Sub(iso.from) <= minorityAckGrace {
				r.minorityAcksInGrace++
				continue
			}
			r.minorityAcks++
			r.example("minority_acks", "broker %d acked writer %d's batch of %d to p%d at %s, isolated %s–%s",
				b.broker, b.writer, b.records, b.partition, b.at.Format(stampLayout),
				iso.from.Format(stampLayout), iso.to.Format(stampLayout))
		}
	}
	return r
}

// locations prints a set of offsets as "p1@5 p1@9", sorted.
func locations(set map[pOff]bool) string {
	locs := make([]string, 0, len(set))
	for at := range set {
		locs = append(locs, fmt.Sprintf("p%d@%d", at.partition, at.offset))
	}
	sort.Strings(locs)
	return strings.Join(locs, " ")
}
