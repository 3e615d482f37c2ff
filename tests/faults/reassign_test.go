package faults

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// moveWait bounds one move: the new replica catches up, two membership changes commit,
// maybe a leadership hand-over, and the controller records the end.
const moveWait = 60 * time.Second

// injectReassign shrinks a partition to two replicas with AlterPartitionReassignments
// (dropping its leader on even picks, so the leader hands over before it leaves, or a
// follower on odd ones), holds it there, then moves it back to three with the dropped
// broker last. Each move must finish within moveWait under the workload's writes.
func (r *run) injectReassign(e event) faultRecord {
	fr := faultRecord{event: e}
	ps, err := r.partitionsNow()
	p, ok := ps[e.partition]
	if err != nil || !ok || len(p.Replicas) < 2 || p.Leader < 1 {
		fr.err = fmt.Errorf("p%d cannot be moved now: replicas %v leader %d (%v)", e.partition, p.Replicas, p.Leader, err)
		return fr
	}
	var followers []int32
	for _, n := range p.Replicas {
		if n != p.Leader {
			followers = append(followers, n)
		}
	}
	drop := p.Leader
	if e.pick%2 == 1 && len(followers) > 0 {
		drop = followers[(e.pick/2)%len(followers)]
	}
	var shrunk []int32
	for _, n := range p.Replicas {
		if n != drop {
			shrunk = append(shrunk, n)
		}
	}
	fr.node = drop
	fr.note = fmt.Sprintf("p%d replicas %v without %d (leader %d), then back", e.partition, p.Replicas, drop, p.Leader)
	fr.injected = time.Now()
	if fr.err = r.move(e.partition, shrunk); fr.err != nil {
		return fr
	}
	time.Sleep(e.hold)
	fr.healed = time.Now()
	fr.err = r.move(e.partition, append(shrunk, drop))
	return fr
}

// move asks for partition p to be on target and waits until no move of it is listed and
// Metadata names target as its replicas.
func (r *run) move(p int32, target []int32) error {
	deadline := time.Now().Add(moveWait)
	var req kadm.AlterPartitionAssignmentsReq
	req.Assign(topicName, p, target)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), adminCallTimeout)
		rs, err := r.adm.AlterPartitionAssignments(ctx, req)
		cancel()
		if err == nil {
			err = rs[topicName][p].Err
			if err == nil {
				break
			}
			if !kerr.IsRetriable(err) {
				return fmt.Errorf("moving p%d to %v: %w", p, target, err)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("moving p%d to %v: not accepted within %s: %v", p, target, moveWait, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	last := "nothing seen yet"
	done := waitFor(time.Until(deadline), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), adminCallTimeout)
		defer cancel()
		ls, err := r.adm.ListPartitionReassignments(ctx, kadm.TopicsSet{topicName: {p: {}}})
		if err != nil {
			last = err.Error()
			return false
		}
		if m, ok := ls[topicName][p]; ok {
			last = fmt.Sprintf("listed: replicas %v adding %v removing %v", m.Replicas, m.AddingReplicas, m.RemovingReplicas)
			return false
		}
		ps, err := r.partitionsNow()
		if err != nil {
			last = err.Error()
			return false
		}
		last = fmt.Sprintf("replicas %v", ps[p].Replicas)
		return slices.Equal(ps[p].Replicas, target)
	})
	if !done {
		return fmt.Errorf("p%d not moved to %v within %s (%s)", p, target, moveWait, last)
	}
	return nil
}
