package vote

import (
	"math/rand/v2"
	"testing"

	"github.com/holdfast-edge/holdfast/health/protocol"
)

const (
	U = protocol.Unknown
	A = protocol.Alive
	D = protocol.Dead
)

func TestQuorumIsFloorHalfPlusOne(t *testing.T) {
	for n, want := range []int{1, 1, 2, 2, 3, 3, 4, 4, 5} {
		if got := Quorum(n); got != want {
			t.Errorf("Quorum(%d) = %d, want %d", n, got, want)
		}
	}
}

// TestDecideTable walks the decision table: no fresh quorum → unknown
// (however the fresh ones vote); a majority of the full membership either
// way decides; otherwise (a tie, or abstentions) the previous verdict
// stands.
func TestDecideTable(t *testing.T) {
	cases := []struct {
		name                  string
		n, fresh, alive, dead int
		prev, want            protocol.State
	}{
		{"all fresh, all alive", 3, 3, 3, 0, U, A},
		{"all fresh, all dead", 3, 3, 0, 3, A, D},
		{"2 of 3 is a majority", 3, 3, 2, 1, D, A},
		{"quorum of fresh voters but only 1 of 3 says dead", 3, 2, 1, 1, A, A},
		{"fresh below quorum: unknown although all fresh say alive", 5, 2, 2, 0, A, U},
		{"fresh below quorum: unknown although all fresh say dead", 4, 2, 0, 2, D, U},
		{"tie 2-2 in 4 keeps alive", 4, 4, 2, 2, A, A},
		{"tie 2-2 in 4 keeps dead", 4, 4, 2, 2, D, D},
		{"tie 2-2 in 4 keeps unknown", 4, 4, 2, 2, U, U},
		{"3 of 4 decides", 4, 4, 3, 1, D, A},
		{"abstentions: 2 alive of 5 fresh in 5 is no majority", 5, 5, 2, 1, D, D},
		{"single member votes itself", 1, 1, 1, 0, U, A},
	}
	for _, c := range cases {
		if got := Decide(c.n, c.fresh, c.alive, c.dead, c.prev); got != c.want {
			t.Errorf("%s: Decide(n=%d fresh=%d alive=%d dead=%d prev=%v) = %v, want %v", c.name, c.n, c.fresh, c.alive, c.dead, c.prev, got, c.want)
		}
	}
}

// views is a unit's views: views[voter][target].
type views [][]protocol.State

func (v views) of(voter int) func(int) protocol.State {
	row := append([]protocol.State(nil), v[voter]...)
	return func(i int) protocol.State { return row[i] }
}

// TestPartitionLargerSideStaysAliveSmallerIsVotedDead: a unit of 5 split
// 3|2. The majority counts from the full membership, so the side of 3
// (fresh quorum 3 = ⌊5/2⌋+1) votes its own alive and the other two dead;
// the side of 2 has no quorum and decides nothing (unknown), instead of
// voting the 3 dead as a count over the reachable would.
func TestPartitionLargerSideStaysAliveSmallerIsVotedDead(t *testing.T) {
	big, small := []int{0, 1, 2}, []int{3, 4}
	view := func(side []int) []protocol.State {
		row := []protocol.State{D, D, D, D, D}
		for _, i := range side {
			row[i] = A
		}
		return row
	}
	tallyOf := func(side []int) *Tally {
		tl := NewTally(5)
		for range side {
			row := view(side)
			tl.Add(func(i int) protocol.State { return row[i] })
		}
		tl.Decide()
		return tl
	}
	bigT, smallT := tallyOf(big), tallyOf(small)
	for i := range 5 {
		want := D
		if i <= 2 {
			want = A
		}
		if got := bigT.Verdict(i); got != want {
			t.Errorf("larger side: member %d is %v, want %v", i, got, want)
		}
		if got := smallT.Verdict(i); got != U {
			t.Errorf("smaller side: member %d is %v, want unknown (no quorum)", i, got)
		}
	}
}

// TestStaleVoterLeavesTheCount: the caller removes a voter whose view went
// stale; once fewer than a quorum of fresh voters remain, every verdict is
// unknown, and a voter coming back restores it.
func TestStaleVoterLeavesTheCount(t *testing.T) {
	v := views{{A, A, A}, {A, A, A}, {A, A, A}}
	tl := NewTally(3)
	for i := range v {
		tl.Add(v.of(i))
	}
	tl.Decide()
	if tl.Verdict(2) != A {
		t.Fatalf("all alive: %v", tl.Verdict(2))
	}
	tl.Remove(v.of(2)) // voter 2's view is stale: 2 fresh of 3, quorum 2
	if changed := tl.Decide(); len(changed) != 0 || tl.Verdict(2) != A {
		t.Fatalf("2 fresh of 3 still decide: changed %v, verdict %v", changed, tl.Verdict(2))
	}
	tl.Remove(v.of(1)) // 1 fresh of 3: no quorum
	if changed := tl.Decide(); len(changed) != 3 || tl.Verdict(0) != U || tl.Active() != 1 {
		t.Fatalf("1 fresh of 3: changed %v, verdict %v, active %d", changed, tl.Verdict(0), tl.Active())
	}
	tl.Add(v.of(1))
	if tl.Decide(); tl.Verdict(0) != A {
		t.Fatalf("voter back: %v", tl.Verdict(0))
	}
}

// TestTieKeepsPreviousVerdictAcrossMemberChange: NewTallyWith carries the
// previous verdicts, so a split after a member-list change does not flip
// them, while a real majority still does.
func TestTieKeepsPreviousVerdictAcrossMemberChange(t *testing.T) {
	tl := NewTallyWith([]protocol.State{A, D, A, A})
	v := views{{A, A, D, A}, {A, A, D, A}, {D, D, A, A}, {D, D, A, A}}
	for i := range v {
		tl.Add(v.of(i))
	}
	changed := tl.Decide()
	// 0 and 1: 2-2 ties, previous verdicts (alive, dead) stand; 2: 2-2,
	// stands alive; 3: 4 alive, stays alive. Nothing changes.
	if len(changed) != 0 || tl.Verdict(0) != A || tl.Verdict(1) != D || tl.Verdict(2) != A {
		t.Fatalf("ties flipped: changed %v, verdicts %v %v %v", changed, tl.Verdict(0), tl.Verdict(1), tl.Verdict(2))
	}
	tl.Move(1, D, A) // voter 2 changes its mind about member 1: 3-1
	if changed := tl.Decide(); len(changed) != 1 || changed[0] != 1 || tl.Verdict(1) != A {
		t.Fatalf("majority did not decide: changed %v, verdict %v", changed, tl.Verdict(1))
	}
	if a, d := tl.Counts(1); a != 3 || d != 1 {
		t.Fatalf("counts %d/%d", a, d)
	}
}

// TestTallyMatchesRecount: under random adds, removals and moves, the
// incremental tally always gives what recounting every fresh view from
// scratch with Decide gives.
func TestTallyMatchesRecount(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	states := []protocol.State{U, A, D}
	for round := range 200 {
		n := 1 + rng.IntN(9)
		v := make(views, n)
		for i := range v {
			v[i] = make([]protocol.State, n)
			for j := range v[i] {
				v[i][j] = states[rng.IntN(3)]
			}
		}
		fresh := make([]bool, n)
		tl := NewTally(n)
		prev := make([]protocol.State, n)
		for step := range 30 {
			voter := rng.IntN(n)
			switch op := rng.IntN(3); {
			case op == 0 && !fresh[voter]:
				fresh[voter] = true
				tl.Add(v.of(voter))
			case op == 1 && fresh[voter]:
				fresh[voter] = false
				tl.Remove(v.of(voter))
			default:
				target, to := rng.IntN(n), states[rng.IntN(3)]
				if fresh[voter] {
					tl.Move(target, v[voter][target], to)
				}
				v[voter][target] = to
			}
			tl.Decide()
			active := 0
			for _, f := range fresh {
				if f {
					active++
				}
			}
			for target := range n {
				alive, dead := 0, 0
				for voter := range n {
					if fresh[voter] && v[voter][target] == A {
						alive++
					}
					if fresh[voter] && v[voter][target] == D {
						dead++
					}
				}
				want := Decide(n, active, alive, dead, prev[target])
				if got := tl.Verdict(target); got != want {
					t.Fatalf("round %d step %d: member %d is %v, recount says %v (n=%d fresh=%d alive=%d dead=%d)", round, step, target, got, want, n, active, alive, dead)
				}
				prev[target] = want
			}
		}
	}
}
