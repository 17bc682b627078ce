package snapshot

import (
	"fmt"
	"strings"
)

// Op is what restore does (or would do) with one entry.
type Op string

const (
	// OpAdd: missing live, restore adds it.
	OpAdd Op = "add"
	// OpKeep: live already equals the snapshot.
	OpKeep Op = "keep"
	// OpSkip: live differs from the snapshot; live is newer and is kept.
	OpSkip Op = "skip"
	// OpLiveOnly: live but not in the snapshot (diff only; restore ignores it).
	OpLiveOnly Op = "live-only"
)

// Action is one entry of a restore plan.
type Action struct {
	Op     Op     `json:"op"`
	Kind   string `json:"kind"` // link, link-up, addr, neigh, fdb, route, subnet.env, chain, rule, nftable
	Device string `json:"device,omitempty"`
	Table  string `json:"table,omitempty"`
	Entry  string `json:"entry"`
	Reason string `json:"reason,omitempty"`

	dev   *Device
	addr  string
	route Route
	fdb   FDBEntry
	neigh Neighbor
	file  *FileCopy
	chain string
	rule  string
	nft   *NFTable
}

func (a Action) String() string {
	s := fmt.Sprintf("%-9s %-10s", a.Op, a.Kind)
	if a.Device != "" {
		s += " " + a.Device
	}
	if a.Table != "" {
		s += " " + a.Table
	}
	s += " " + a.Entry
	if a.Reason != "" {
		s += " (" + a.Reason + ")"
	}
	return s
}

// liveState is what the kernel holds for the parts a snapshot covers.
type liveState struct {
	devices   map[string]*liveDevice // nil value: no such link
	subnetEnv *FileCopy
	iptables  map[string]*savedTable
	// nftables maps "family name" to the live text of each snapshot table
	// that exists live.
	nftables map[string]string
}

// plan compares the snapshot with live state. It is pure: the "what belongs
// to this node and what is missing" logic, kept apart from the kernel calls.
// Order is the restore order: per device link, addresses, neighbours, FDB,
// routes; then subnet.env; then iptables chains and rules; then nftables
// tables.
func plan(want *Snapshot, live *liveState, withLiveOnly bool) []Action {
	var acts []Action
	for i := range want.Devices {
		acts = append(acts, planDevice(&want.Devices[i], live.devices[want.Devices[i].Name], withLiveOnly)...)
	}
	acts = append(acts, planSubnetEnv(want.SubnetEnv, live.subnetEnv)...)
	for _, t := range want.IPTables {
		acts = append(acts, planIPTable(t, live.iptables[t.Table])...)
	}
	for i := range want.NFTables {
		acts = append(acts, planNFTable(&want.NFTables[i], live.nftables))
	}
	return acts
}

// planNFTable: a table missing live is added whole; one that exists live is
// its owner's newer state and is kept as it is, equal (keep) or not (skip).
func planNFTable(want *NFTable, live map[string]string) Action {
	a := Action{Op: OpAdd, Kind: "nftable", Table: want.Key(), Entry: fmt.Sprintf("%d lines", strings.Count(want.Text, "\n")), nft: want}
	if text, ok := live[want.Key()]; ok {
		a.Op = OpKeep
		if text != want.Text {
			a.Op, a.Reason = OpSkip, "table exists live and differs: live is newer"
		}
	}
	return a
}

func planDevice(d *Device, live *liveDevice, withLiveOnly bool) []Action {
	act := func(op Op, kind, entry, reason string) Action {
		return Action{Op: op, Kind: kind, Device: d.Name, Entry: entry, Reason: reason, dev: d}
	}
	acts, live, ours := planLink(d, live, act)
	if !ours {
		return acts
	}
	var liveOnly []Action
	add := func(a, l []Action) {
		acts = append(acts, a...)
		liveOnly = append(liveOnly, l...)
	}
	add(planEntries(addrEntries, d.Addrs, live.Addrs, act))
	add(planEntries(neighEntries, d.Neighbors, live.Neighbors, act))
	add(planEntries(fdbEntries, d.FDB, live.FDB, act))
	add(planEntries(routeEntries, d.Routes, live.Routes, act))
	if withLiveOnly {
		acts = append(acts, liveOnly...)
	}
	return acts
}

// planLink plans the device link itself. ours is false when another link
// holds the name (its entries are then skipped too); a missing device is
// planned as new and empty.
func planLink(d *Device, live *liveDevice, act func(op Op, kind, entry, reason string) Action) (acts []Action, _ *liveDevice, ours bool) {
	link := fmt.Sprintf("vxlan id %d mac %s", d.VNI, d.PinnedMAC)
	switch {
	case live == nil:
		return []Action{act(OpAdd, "link", link, "")}, &liveDevice{}, true
	case live.kind != "vxlan" || live.VNI != d.VNI:
		// Another device holds the name: touch nothing of it.
		reason := fmt.Sprintf("live link is %s", live.kind)
		if live.kind == "vxlan" {
			reason = fmt.Sprintf("live vxlan has id %d", live.VNI)
		}
		acts = append(acts, act(OpSkip, "link", link, reason))
		if n := len(d.Addrs) + len(d.Neighbors) + len(d.FDB) + len(d.Routes); n > 0 {
			acts = append(acts, act(OpSkip, "entries", fmt.Sprintf("%d entries", n), "device not restored"))
		}
		return acts, live, false
	}
	reason := ""
	if !strings.EqualFold(live.MAC, d.PinnedMAC) {
		reason = fmt.Sprintf("live MAC %s differs from pin %s: live kept", live.MAC, d.PinnedMAC)
	}
	acts = append(acts, act(OpKeep, "link", link, reason))
	if !live.up {
		acts = append(acts, act(OpAdd, "link-up", "up", "device was down"))
	}
	return acts, live, true
}

// entryKind is what planEntries needs to know of one kind of device entry.
type entryKind[E any] struct {
	kind string
	key  func(E) string            // identity: an entry and a live one with its key are the same entry
	show func(E) string            // the Action's Entry text
	diff func(want, live E) string // why a live entry with the key differs ("" = it does not)
	set  func(*Action, E)          // records the entry an Add restores
}

// planEntries plans want against live: Add what is missing, Keep what is
// there, Skip (keeping it) a live entry that differs; liveOnly lists the
// live entries not in want.
func planEntries[E any](k entryKind[E], want, live []E, act func(op Op, kind, entry, reason string) Action) (acts, liveOnly []Action) {
	byKey := make(map[string]E, len(live))
	for _, l := range live {
		byKey[k.key(l)] = l
	}
	wanted := make(map[string]bool, len(want))
	for _, w := range want {
		wanted[k.key(w)] = true
		a := act(OpAdd, k.kind, k.show(w), "")
		if l, ok := byKey[k.key(w)]; ok {
			a.Op = OpKeep
			if reason := k.diff(w, l); reason != "" {
				a.Op, a.Reason = OpSkip, reason
			}
		}
		k.set(&a, w)
		acts = append(acts, a)
	}
	for _, l := range live {
		if !wanted[k.key(l)] {
			liveOnly = append(liveOnly, act(OpLiveOnly, k.kind, k.show(l), ""))
		}
	}
	return acts, liveOnly
}

var addrEntries = entryKind[string]{
	kind: "addr",
	key:  func(a string) string { return a },
	show: func(a string) string { return a },
	diff: func(string, string) string { return "" },
	set:  func(act *Action, a string) { act.addr = a },
}

var neighEntries = entryKind[Neighbor]{
	kind: "neigh",
	key:  func(n Neighbor) string { return n.IP },
	show: func(n Neighbor) string { return n.IP + " lladdr " + n.MAC },
	diff: func(w, l Neighbor) string {
		if !strings.EqualFold(l.MAC, w.MAC) {
			return "live lladdr " + l.MAC
		}
		return ""
	},
	set: func(act *Action, n Neighbor) { act.neigh = n },
}

var fdbEntries = entryKind[FDBEntry]{
	kind: "fdb",
	key: func(e FDBEntry) string {
		if e.MAC == "00:00:00:00:00:00" {
			return e.MAC + "/" + e.Dst // default destinations may be several
		}
		return strings.ToLower(e.MAC)
	},
	show: func(e FDBEntry) string { return e.MAC + " dst " + e.Dst },
	diff: func(w, l FDBEntry) string {
		if l.Dst != w.Dst {
			return "live dst " + l.Dst
		}
		return ""
	},
	set: func(act *Action, e FDBEntry) { act.fdb = e },
}

var routeEntries = entryKind[Route]{
	kind: "route",
	key:  func(r Route) string { return fmt.Sprintf("%s metric %d", r.Dst, r.Metric) },
	show: Route.String,
	diff: func(w, l Route) string {
		if l.Via != w.Via || l.OnLink != w.OnLink || w.Src != "" && l.Src != w.Src {
			return "live: " + l.String()
		}
		return ""
	},
	set: func(act *Action, r Route) { act.route = r },
}

func planSubnetEnv(want, live *FileCopy) []Action {
	if want == nil {
		return nil
	}
	a := Action{Op: OpAdd, Kind: "subnet.env", Entry: want.Path, file: want}
	if live != nil {
		a.Op = OpKeep
		if live.Content != want.Content {
			a.Op, a.Reason = OpSkip, "live file differs"
		}
	}
	return []Action{a}
}

// planIPTable: a chain missing live is added with all its rules; a chain
// that exists live is live state and is kept as it is; a jump rule from a
// built-in chain is added when missing.
func planIPTable(want IPTable, live *savedTable) []Action {
	if live == nil {
		live = &savedTable{chains: map[string]bool{}, builtin: map[string]bool{}, ruleSet: map[string]bool{}}
	}
	var acts []Action
	newChain := map[string]bool{}
	wantChain := map[string]bool{}
	for _, c := range want.Chains {
		wantChain[c] = true
		a := Action{Op: OpAdd, Kind: "chain", Table: want.Table, Entry: c, chain: c}
		if live.chains[c] {
			a.Op = OpKeep
		} else {
			newChain[c] = true
		}
		acts = append(acts, a)
	}
	for _, r := range want.Rules {
		c := ruleChain(r)
		a := Action{Op: OpAdd, Kind: "rule", Table: want.Table, Entry: r, rule: r}
		switch {
		case live.ruleSet[r]:
			a.Op = OpKeep
		case wantChain[c] && !newChain[c]:
			a.Op, a.Reason = OpSkip, "chain "+c+" exists live"
		case !wantChain[c] && !live.chains[c]:
			a.Op, a.Reason = OpSkip, "built-in chain "+c+" missing"
		}
		acts = append(acts, a)
	}
	return acts
}

// String renders a route like ip route.
func (r Route) String() string {
	s := r.Dst
	if r.Via != "" {
		s += " via " + r.Via
	}
	if r.Src != "" {
		s += " src " + r.Src
	}
	if r.Metric != 0 {
		s += fmt.Sprintf(" metric %d", r.Metric)
	}
	if r.OnLink {
		s += " onlink"
	}
	return s
}
