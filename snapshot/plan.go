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
	var acts []Action
	act := func(op Op, kind, entry, reason string) Action {
		return Action{Op: op, Kind: kind, Device: d.Name, Entry: entry, Reason: reason, dev: d}
	}
	link := fmt.Sprintf("vxlan id %d mac %s", d.VNI, d.PinnedMAC)
	switch {
	case live == nil:
		acts = append(acts, act(OpAdd, "link", link, ""))
		live = &liveDevice{} // a new device starts empty
	case live.kind != "vxlan" || live.VNI != d.VNI:
		// Another device holds the name: touch nothing of it.
		reason := fmt.Sprintf("live link is %s", live.kind)
		if live.kind == "vxlan" {
			reason = fmt.Sprintf("live vxlan has id %d", live.VNI)
		}
		acts = append(acts, act(OpSkip, "link", link, reason))
		n := len(d.Addrs) + len(d.Neighbors) + len(d.FDB) + len(d.Routes)
		if n > 0 {
			acts = append(acts, act(OpSkip, "entries", fmt.Sprintf("%d entries", n), "device not restored"))
		}
		return acts
	default:
		reason := ""
		if !strings.EqualFold(live.MAC, d.PinnedMAC) {
			reason = fmt.Sprintf("live MAC %s differs from pin %s: live kept", live.MAC, d.PinnedMAC)
		}
		acts = append(acts, act(OpKeep, "link", link, reason))
		if !live.up {
			acts = append(acts, act(OpAdd, "link-up", "up", "device was down"))
		}
	}

	liveAddrs := map[string]bool{}
	for _, a := range live.Addrs {
		liveAddrs[a] = true
	}
	wantAddrs := map[string]bool{}
	for _, a := range d.Addrs {
		wantAddrs[a] = true
		a2 := act(OpAdd, "addr", a, "")
		if liveAddrs[a] {
			a2.Op = OpKeep
		}
		a2.addr = a
		acts = append(acts, a2)
	}

	liveNeigh := map[string]Neighbor{}
	for _, n := range live.Neighbors {
		liveNeigh[n.IP] = n
	}
	wantNeigh := map[string]bool{}
	for _, n := range d.Neighbors {
		wantNeigh[n.IP] = true
		a := act(OpAdd, "neigh", n.IP+" lladdr "+n.MAC, "")
		if l, ok := liveNeigh[n.IP]; ok {
			a.Op = OpKeep
			if !strings.EqualFold(l.MAC, n.MAC) {
				a.Op, a.Reason = OpSkip, "live lladdr "+l.MAC
			}
		}
		a.neigh = n
		acts = append(acts, a)
	}

	fdbKey := func(e FDBEntry) string {
		if e.MAC == "00:00:00:00:00:00" {
			return e.MAC + "/" + e.Dst // default destinations may be several
		}
		return strings.ToLower(e.MAC)
	}
	liveFDB := map[string]FDBEntry{}
	for _, e := range live.FDB {
		liveFDB[fdbKey(e)] = e
	}
	wantFDB := map[string]bool{}
	for _, e := range d.FDB {
		wantFDB[fdbKey(e)] = true
		a := act(OpAdd, "fdb", e.MAC+" dst "+e.Dst, "")
		if l, ok := liveFDB[fdbKey(e)]; ok {
			a.Op = OpKeep
			if l.Dst != e.Dst {
				a.Op, a.Reason = OpSkip, "live dst "+l.Dst
			}
		}
		a.fdb = e
		acts = append(acts, a)
	}

	routeKey := func(r Route) string { return fmt.Sprintf("%s metric %d", r.Dst, r.Metric) }
	liveRoutes := map[string]Route{}
	for _, r := range live.Routes {
		liveRoutes[routeKey(r)] = r
	}
	wantRoutes := map[string]bool{}
	for _, r := range d.Routes {
		wantRoutes[routeKey(r)] = true
		a := act(OpAdd, "route", r.String(), "")
		if l, ok := liveRoutes[routeKey(r)]; ok {
			a.Op = OpKeep
			if l.Via != r.Via || l.OnLink != r.OnLink || r.Src != "" && l.Src != r.Src {
				a.Op, a.Reason = OpSkip, "live: "+l.String()
			}
		}
		a.route = r
		acts = append(acts, a)
	}

	if withLiveOnly {
		for _, a := range live.Addrs {
			if !wantAddrs[a] {
				acts = append(acts, act(OpLiveOnly, "addr", a, ""))
			}
		}
		for _, n := range live.Neighbors {
			if !wantNeigh[n.IP] {
				acts = append(acts, act(OpLiveOnly, "neigh", n.IP+" lladdr "+n.MAC, ""))
			}
		}
		for _, e := range live.FDB {
			if !wantFDB[fdbKey(e)] {
				acts = append(acts, act(OpLiveOnly, "fdb", e.MAC+" dst "+e.Dst, ""))
			}
		}
		for _, r := range live.Routes {
			if !wantRoutes[routeKey(r)] {
				acts = append(acts, act(OpLiveOnly, "route", r.String(), ""))
			}
		}
	}
	return acts
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
