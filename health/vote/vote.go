// Package vote turns the views of a unit's members into verdicts, per the
// decision table in docs/health.md: a member is alive or dead when at least
// ⌊N/2⌋+1 of the unit's N members (full membership, not who is reachable)
// say so in a fresh view; with fewer than ⌊N/2⌋+1 fresh voters there is no
// quorum and every verdict is unknown; with a quorum but no majority either
// way the previous verdict stands, so verdicts never flap on a split.
//
// It owns only counting. It never touches the network, keys, clocks or files:
// the caller says which voters are fresh and what each one's view is.
package vote

import "github.com/holdfast-edge/holdfast/health/protocol"

// Verdict is the outcome for one member.
type Verdict = protocol.State

// Quorum is ⌊n/2⌋+1.
func Quorum(n int) int { return n/2 + 1 }

// Tally keeps per-member alive/dead counts over the active voters
// incrementally, so a changed view entry costs O(1) and computing all
// verdicts costs O(N). It does not store views: the caller owns them and
// reports every change (Add, Remove, Move).
type Tally struct {
	n        int
	alive    []int
	dead     []int
	active   int
	verdicts []Verdict
}

// NewTally returns a tally for a unit of n members; every verdict starts unknown.
func NewTally(n int) *Tally {
	return &Tally{n: n, alive: make([]int, n), dead: make([]int, n), verdicts: make([]Verdict, n)}
}

// NewTallyWith returns a tally whose verdicts start at prev (one per member):
// after a member-list change a kept member's verdict stands until the counts
// decide otherwise, so the change itself never flips it.
func NewTallyWith(prev []Verdict) *Tally {
	t := NewTally(len(prev))
	copy(t.verdicts, prev)
	return t
}

// Active is the number of voters whose views are counted.
func (t *Tally) Active() int { return t.active }

func (t *Tally) add(target int, s protocol.State, d int) {
	switch s {
	case protocol.Alive:
		t.alive[target] += d
	case protocol.Dead:
		t.dead[target] += d
	}
}

// Add counts a newly active voter whose view is given by at(i), i in [0,N).
func (t *Tally) Add(at func(int) protocol.State) {
	t.active++
	for i := 0; i < t.n; i++ {
		t.add(i, at(i), 1)
	}
}

// Remove stops counting a voter whose (last counted) view is given by at.
func (t *Tally) Remove(at func(int) protocol.State) {
	t.active--
	for i := 0; i < t.n; i++ {
		t.add(i, at(i), -1)
	}
}

// Move records that one active voter's entry for target changed.
func (t *Tally) Move(target int, from, to protocol.State) {
	if from == to {
		return
	}
	t.add(target, from, -1)
	t.add(target, to, 1)
}

// Counts returns how many active voters say target is alive and dead.
func (t *Tally) Counts(target int) (alive, dead int) { return t.alive[target], t.dead[target] }

// Decide recomputes every verdict and returns the indices whose verdict changed.
func (t *Tally) Decide() []int {
	var changed []int
	for i := 0; i < t.n; i++ {
		v := Decide(t.n, t.active, t.alive[i], t.dead[i], t.verdicts[i])
		if v != t.verdicts[i] {
			t.verdicts[i] = v
			changed = append(changed, i)
		}
	}
	return changed
}

// Verdict returns the current verdict on target (as of the last Decide).
func (t *Tally) Verdict(target int) Verdict { return t.verdicts[target] }

// Decide is the decision for one member from plain counts, for consumers
// that hold views themselves (the webhook): prev is kept on a split.
func Decide(n, fresh, alive, dead int, prev Verdict) Verdict {
	q := Quorum(n)
	switch {
	case fresh < q:
		return protocol.Unknown
	case alive >= q:
		return protocol.Alive
	case dead >= q:
		return protocol.Dead
	}
	return prev
}
