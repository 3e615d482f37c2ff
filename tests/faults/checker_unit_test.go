package faults

import (
	"testing"
	"time"
)

// TestChecker feeds the checker small histories with one known violation each.
func TestChecker(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	rd := func(p int32, off int64, w, s int) read { return read{p, off, value(w, s), at(int(off))} }
	good := func() *history {
		return &history{
			acks: []ack{
				{writer: 1, seq: 0, partition: 0, offset: 0},
				{writer: 1, seq: 1, partition: 0, offset: 1},
				{writer: 2, seq: 0, partition: 1, offset: 0},
			},
			ordered: [][]read{
				{rd(0, 0, 1, 0), rd(1, 0, 2, 0), rd(0, 1, 1, 1)},
				{rd(0, 0, 1, 0), rd(0, 1, 1, 1), rd(1, 0, 2, 0)},
			},
			commits: []commitObs{
				{at(10), 0, 1}, {at(20), 0, 2}, {at(30), 0, 2},
			},
			commitAcks:  []commitAck{{at(15), 0, 2}},
			healToWrite: []time.Duration{time.Second, 2 * time.Second},
			// Broker 2 isolated from 1 s to 5 s. None of these acks is one of its minority
			// acks: before the cut, within the grace, after the heal, another broker.
			isolations: []isolation{{2, at(1000), at(5000)}},
			batches: []batchAck{
				{writer: 1, broker: 2, partition: 0, records: 1, at: at(500)},
				{writer: 1, broker: 2, partition: 0, records: 1, at: at(1000)},
				{writer: 1, broker: 2, partition: 0, records: 1, at: at(1500)},
				{writer: 1, broker: 2, partition: 0, records: 1, at: at(6000)},
				{writer: 1, broker: 1, partition: 1, records: 1, at: at(3000)},
			},
		}
	}
	cases := []struct {
		name   string
		change func(h *history)
		want   func(r *report) int
	}{
		{"lost_missing", func(h *history) {
			h.acks = append(h.acks, ack{writer: 2, seq: 1, partition: 1, offset: 1})
		}, func(r *report) int { return r.lostMissing }},
		{"lost_overwritten", func(h *history) {
			h.acks[1].seq = 7
		}, func(r *report) int { return r.lostOverwritten }},
		{"ack_offset_wrong", func(h *history) {
			h.acks[1].offset = 0
			h.acks[0].offset = 1
			h.acks = h.acks[1:]
		}, func(r *report) int { return r.misplaced }},
		{"duplicates", func(h *history) {
			h.ordered[0] = append(h.ordered[0], rd(0, 2, 1, 0))
		}, func(r *report) int { return r.duplicates }},
		{"conflicts", func(h *history) {
			h.unordered = append(h.unordered, rd(1, 0, 3, 3))
		}, func(r *report) int { return r.conflicts }},
		{"backwards", func(h *history) {
			h.ordered[1] = append(h.ordered[1], rd(0, 0, 1, 0))
		}, func(r *report) int { return r.backwards }},
		{"commit_backwards", func(h *history) {
			h.commits = append(h.commits, commitObs{at(35), 1, 5}, commitObs{at(40), 1, 4})
		}, func(r *report) int { return r.commitBackwards }},
		{"commit_lost", func(h *history) {
			h.commitAcks = append(h.commitAcks, commitAck{at(25), 0, 5})
		}, func(r *report) int { return r.commitLost }},
		{"foreign", func(h *history) {
			h.unordered = append(h.unordered, read{partition: 2, offset: 0, value: "junk"})
		}, func(r *report) int { return r.foreign }},
		{"heal_missing", func(h *history) {
			h.healToWrite[0] = -1
		}, func(r *report) int { return r.healMissing }},
		{"heal_over_bound", func(h *history) {
			h.healToWrite[1] = healToWriteBound + time.Millisecond
		}, func(r *report) int { return r.healOverBound }},
		{"minority_acks", func(h *history) {
			h.batches = append(h.batches, batchAck{writer: 2, broker: 2, partition: 1, records: 3, at: at(3000)})
		}, func(r *report) int { return r.minorityAcks }},
	}
	if r := check(good()); len(r.violations()) != 0 || r.gaps != 0 || r.minorityAcksInGrace != 1 {
		t.Fatalf("clean history reported %v (minority acks in grace %d, want 1)\n%s", r.violations(), r.minorityAcksInGrace, r)
	}
	for _, c := range cases {
		h := good()
		c.change(h)
		r := check(h)
		if got := c.want(r); got != 1 {
			t.Errorf("%s: count %d, want 1\n%s", c.name, got, r)
		}
		if v := r.violations(); len(v) != 1 {
			t.Errorf("%s: violations %v, want exactly one kind\n%s", c.name, v, r)
		}
	}
	// A skipped offset is reported as information, not as a violation.
	h := good()
	h.ordered[0] = append(h.ordered[0], rd(0, 3, 1, 3))
	if r := check(h); r.gaps != 1 || len(r.violations()) != 0 {
		t.Errorf("gap: gaps=%d violations=%v", r.gaps, r.violations())
	}
	if w, s, ok := parseValue(value(12, 345)); !ok || w != 12 || s != 345 {
		t.Errorf("parseValue(value(12, 345)) = %d, %d, %v", w, s, ok)
	}
}
