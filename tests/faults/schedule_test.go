package faults

import (
	"fmt"
	"math/rand"
	"strings"
	"time"
)

// faultKind is one kind of fault the schedule injects, one at a time, so that two of the
// three replicas of every Raft group are always up: each fault must be survived.
type faultKind int

const (
	killLeader      faultKind = iota // kill -9 a partition's leader, restart it after hold
	killFollower                     // kill -9 a partition's follower, restart it after hold
	killController                   // kill -9 the controller group's leader, restart it after hold
	pauseLeader                      // SIGSTOP a partition's leader, SIGCONT after hold
	pauseBroker                      // SIGSTOP any broker, SIGCONT after hold
	killCoordinator                  // kill -9 the consumer group's coordinator, restart it after hold
	reassign                         // move a partition to two replicas, back to three after hold
	partition                        // cut a partition's leader off from the other brokers' RPC, heal after hold
	slowDisk                         // delay every fdatasync of a partition's leader or follower, undo after hold
	faultKinds
)

func (k faultKind) String() string {
	return [...]string{"kill-leader", "kill-follower", "kill-controller", "pause-leader", "pause-broker", "kill-coordinator", "reassign", "partition", "slow-disk"}[k]
}

func (k faultKind) kills() bool {
	return k == killLeader || k == killFollower || k == killController || k == killCoordinator
}

const (
	// Kills hold the broker down 1–6 s: shorter than an election, and long enough for
	// the survivors to elect and take writes without it.
	killHoldMin, killHoldMax = 1 * time.Second, 6 * time.Second
	// Pauses of 0.3–8 s: some end before an election timeout (the paused leader comes
	// back still believing it leads), some long after a new leader took over.
	pauseHoldMin, pauseHoldMax = 300 * time.Millisecond, 8 * time.Second
	// Partitions and slow disks hold like pauses (pauseHoldMin–pauseHoldMax), for the
	// same reason: some end before an election timeout, some long after.
	//
	// A slow disk delays each fdatasync by 20–400 ms: from a busy disk to one that makes
	// every acks=all write wait longer than an election heartbeat.
	slowDiskDelayMin, slowDiskDelayMax = 20 * time.Millisecond, 400 * time.Millisecond
	// quiet is the healthy time after each heal, for a restarted broker to catch up
	// before the next fault takes another one away.
	quietMin, quietMax = 3 * time.Second, 7 * time.Second
)

// event is one planned fault; the plan is a pure function of the seed. The broker it
// hits is resolved when it is injected (who leads depends on the run), from partition
// and pick, so a replay hits the same roles though maybe not the same node ids.
type event struct {
	kind      faultKind
	partition int32 // whose leader or follower, for the partition kinds
	pick      int   // which follower, or which broker for pause-broker
	hold      time.Duration
	quiet     time.Duration
	delay     time.Duration // slow-disk: what every fdatasync waits, whole milliseconds
}

func (e event) String() string {
	s := fmt.Sprintf("%s p%d pick %d hold %s quiet %s", e.kind, e.partition, e.pick,
		e.hold.Round(time.Millisecond), e.quiet.Round(time.Millisecond))
	if e.kind == slowDisk {
		s += fmt.Sprintf(" delay %s", e.delay)
	}
	return s
}

func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int63n(int64(hi-lo)+1))
}

// allKinds is every fault kind, in declaration order.
func allKinds() []faultKind {
	ks := make([]faultKind, faultKinds)
	for i := range ks {
		ks[i] = faultKind(i)
	}
	return ks
}

// parseKinds reads a comma-separated list of kind names (SLUICE_FAULT_KINDS).
func parseKinds(s string) ([]faultKind, error) {
	var ks []faultKind
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, k := range allKinds() {
			if k.String() == name {
				ks, found = append(ks, k), true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown fault kind %q (kinds: %v)", name, allKinds())
		}
	}
	return ks, nil
}

// plan draws n events of the given kinds from seed. Kinds come in shuffled rounds of
// all of them, so that even a short run injects every kind. The round's length is the
// number of kinds, so adding a kind changes what a seed replays with all kinds; a given
// SLUICE_FAULT_KINDS list of older kinds replays as before (only slow-disk draws more).
func plan(seed int64, n int, partitions int32, kinds []faultKind) []event {
	rng := rand.New(rand.NewSource(seed))
	var evs []event
	var round []int
	for i := 0; i < n; i++ {
		if len(round) == 0 {
			round = rng.Perm(len(kinds))
		}
		k := kinds[round[0]]
		round = round[1:]
		ev := event{kind: k, partition: int32(rng.Intn(int(partitions))), pick: rng.Intn(1 << 16)}
		if k.kills() {
			ev.hold = between(rng, killHoldMin, killHoldMax)
		} else {
			ev.hold = between(rng, pauseHoldMin, pauseHoldMax)
		}
		ev.quiet = between(rng, quietMin, quietMax)
		if k == slowDisk {
			ev.delay = between(rng, slowDiskDelayMin, slowDiskDelayMax).Truncate(time.Millisecond)
		}
		evs = append(evs, ev)
	}
	return evs
}
