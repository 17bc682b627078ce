// Package allocator is holdfast-ipam's pin policy: which address a pod
// interface gets. Addresses are pinned to network + pod namespace + pod name
// + ifname; a pod coming back (new sandbox, after DEL, after a reboot) gets
// its pinned address again when it is free and still inside the configured
// ranges. New allocations never take an address pinned to another pod,
// except that, when no unpinned free address remains, the least recently
// used released pin is reclaimed. Released pins expire pinTTL after their
// last use. Without a pod identity it behaves like host-local.
//
// It works over the small Store interface and never touches files or the
// network itself; every operation loads the state under the store's lock,
// decides, and saves once, so it either completes or leaves nothing behind.
package allocator

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/config"
	"github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/store"
)

// Store is what the allocator needs from storage.
type Store interface {
	Lock() error
	Unlock() error
	Load() (*store.State, error)
	// Save replaces the state; dur says whether it must be on disk
	// before Save returns (store.Durable) or may follow (store.Deferred).
	Save(st *store.State, dur store.Durability) error
}

// ErrExhausted is returned (wrapped) when a range set has no address left.
var ErrExhausted = errors.New("no free address")

// ErrNotFound is returned (wrapped) by Check when the container holds nothing.
var ErrNotFound = errors.New("no allocation")

// Allocator applies the pin policy to one network.
type Allocator struct {
	Store   Store
	Network string
	Ranges  []config.RangeSet
	PinTTL  time.Duration
	Log     *slog.Logger
	Now     func() time.Time
	// NetnsGone reports whether a recorded netns path no longer exists (so
	// an allocation held under it by the same pod is stale). Defaults to
	// os.Stat.
	NetnsGone func(path string) bool
	// HostLocalHolds reports whether a host-local reservation file still
	// names the container (default: store.HostLocalHolds), and DropHostLocal
	// removes one that does (default: store.DropHostLocal).
	HostLocalHolds func(path, cid, ifName string) bool
	DropHostLocal  func(path, cid, ifName string) error
}

// New returns an allocator for the validated network n over s.
func New(s Store, n *config.Net, log *slog.Logger) *Allocator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Allocator{Store: s, Network: n.Name, Ranges: n.IPAM.Ranges, PinTTL: n.IPAM.PinTTL, Log: log, Now: time.Now}
}

// Request identifies the interface asking for addresses.
type Request struct {
	ContainerID string
	IfName      string
	Netns       string
	Pod         config.PodArgs
}

// Lease is one address handed out, one per range set.
type Lease struct {
	IP       netip.Addr
	RangeSet int
	Range    config.Range
}

func (a *Allocator) now() time.Time {
	if a.Now == nil {
		return time.Now()
	}
	return a.Now()
}

func (a *Allocator) netnsGone(p string) bool {
	if a.NetnsGone != nil {
		return a.NetnsGone(p)
	}
	if p == "" {
		return true
	}
	_, err := os.Stat(p)
	return errors.Is(err, os.ErrNotExist)
}

// update runs fn on the state under the lock and saves, with dur, if fn
// says so.
func (a *Allocator) update(dur store.Durability, fn func(st *store.State) (bool, error)) (err error) {
	if err := a.Store.Lock(); err != nil {
		return err
	}
	defer func() {
		// Unlock finishes a durable save (the directory fsync): its
		// error is the operation's.
		if uerr := a.Store.Unlock(); err == nil {
			err = uerr
		}
	}()
	st, err := a.Store.Load()
	if err != nil {
		return err
	}
	reconciled := a.reconcile(st)
	changed, err := fn(st)
	if err != nil {
		return err
	}
	if changed || reconciled {
		return a.Store.Save(st, dur)
	}
	return nil
}

func (a *Allocator) rangeOf(set int, ip netip.Addr) (config.Range, bool) {
	if set < 0 || set >= len(a.Ranges) {
		return config.Range{}, false
	}
	for _, r := range a.Ranges[set] {
		if r.Contains(ip) {
			return r, true
		}
	}
	return config.Range{}, false
}

// expire drops released pins unused for longer than PinTTL.
func (a *Allocator) expire(st *store.State, now time.Time) bool {
	changed := false
	for k, p := range st.Pins {
		if p.ContainerID == "" && now.Sub(p.LastUsed) > a.PinTTL {
			delete(st.Pins, k)
			a.Log.Info("pin expired", "network", a.Network, "pin", k, "ips", p.IPs, "lastUsed", p.LastUsed)
			changed = true
		}
	}
	return changed
}

// Add allocates one address per range set for req.
func (a *Allocator) Add(req Request) ([]Lease, error) {
	var leases []Lease
	// Durable: a new pod's pin must survive a power loss.
	err := a.update(store.Durable, func(st *store.State) (bool, error) {
		var err error
		leases, err = a.add(st, req)
		return err == nil, err
	})
	if err != nil {
		return nil, err
	}
	return leases, nil
}

func (a *Allocator) add(st *store.State, req Request) ([]Lease, error) {
	now := a.now()
	a.expire(st, now)
	key := ""
	if req.Pod.Pinned() {
		key = config.PinKey(a.Network, req.Pod, req.IfName)
	}
	pod := slog.String("pod", req.Pod.Namespace+"/"+req.Pod.Name)

	// A repeated ADD for the same container interface gets what it holds.
	if held := a.held(st, req.ContainerID, req.IfName); len(held) == len(a.Ranges) {
		if p := st.Pins[key]; key != "" && p != nil {
			p.LastUsed, p.ContainerID = now, req.ContainerID
		}
		return held, nil
	} else if len(held) > 0 {
		for _, l := range held {
			delete(st.Allocations, l.IP.String())
		}
	}

	// Addresses pinned to other pods are off limits for new allocations.
	pinnedToOthers := map[string]string{}
	for k, p := range st.Pins {
		if k == key {
			continue
		}
		for _, ip := range p.IPs {
			pinnedToOthers[ip] = k
		}
	}
	pin := st.Pins[key]
	leases := make([]Lease, 0, len(a.Ranges))
	for i, set := range a.Ranges {
		var got netip.Addr
		if pin != nil && i < len(pin.IPs) {
			want, err := netip.ParseAddr(pin.IPs[i])
			if err == nil && set.Contains(want) {
				al, taken := st.Allocations[want.String()]
				switch {
				case !taken:
					got = want
				case al.PinKey == key && a.netnsGone(al.Netns):
					a.Log.Info("pinned address taken over from stale sandbox", pod, "network", a.Network, "ip", want.String(), "oldContainer", al.ContainerID, "container", req.ContainerID)
					delete(st.Allocations, want.String())
					got = want
				default:
					a.Log.Info("pinned address busy", pod, "network", a.Network, "ip", want.String(), "heldBy", al.ContainerID)
				}
			} else if err == nil {
				a.Log.Info("pinned address outside current ranges", pod, "network", a.Network, "ip", want.String())
			}
		}
		if !got.IsValid() {
			got = a.nextFree(st, i, set, pinnedToOthers)
			if !got.IsValid() {
				got = a.reclaim(st, i, set, key, now)
			}
			if !got.IsValid() {
				return nil, fmt.Errorf("network %s range set %d: %w (%d addresses allocated, the rest pinned to running pods)", a.Network, i, ErrExhausted, countInSet(st, i))
			}
			if pin != nil && i < len(pin.IPs) {
				a.Log.Info("pin moved", pod, "network", a.Network, "from", pin.IPs[i], "to", got.String())
			}
			st.LastReserved[i] = got.String()
		}
		r, _ := a.rangeOf(i, got)
		st.Allocations[got.String()] = &store.Allocation{IP: got.String(), RangeSet: i, ContainerID: req.ContainerID, IfName: req.IfName, PinKey: key, Netns: req.Netns, Since: now}
		leases = append(leases, Lease{IP: got, RangeSet: i, Range: r})
	}
	if key != "" {
		ips := make([]string, len(leases))
		for i, l := range leases {
			ips[i] = l.IP.String()
		}
		st.Pins[key] = &store.Pin{Key: key, Namespace: req.Pod.Namespace, Name: req.Pod.Name, IfName: req.IfName, IPs: ips, ContainerID: req.ContainerID, LastUsed: now}
	}
	a.Log.Info("allocated", pod, "network", a.Network, "container", req.ContainerID, "ifname", req.IfName, "ips", leaseStrings(leases))
	return leases, nil
}

func leaseStrings(ls []Lease) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.IP.String()
	}
	return out
}

func countInSet(st *store.State, set int) int {
	n := 0
	for _, al := range st.Allocations {
		if al.RangeSet == set {
			n++
		}
	}
	return n
}

// held returns the leases container/ifname holds that are still in range.
func (a *Allocator) held(st *store.State, cid, ifName string) []Lease {
	var out []Lease
	for _, al := range st.Allocations {
		if al.ContainerID != cid || al.IfName != ifName {
			continue
		}
		ip, err := netip.ParseAddr(al.IP)
		if err != nil {
			continue
		}
		r, ok := a.rangeOf(al.RangeSet, ip)
		if !ok {
			continue
		}
		out = append(out, Lease{IP: ip, RangeSet: al.RangeSet, Range: r})
	}
	sortLeases(out)
	return out
}

func sortLeases(ls []Lease) {
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && ls[j].RangeSet < ls[j-1].RangeSet; j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
}

// nextFree walks the range set round-robin from the last reserved address
// and returns the first address that is neither allocated, a gateway, nor
// pinned to another pod.
func (a *Allocator) nextFree(st *store.State, set int, rs config.RangeSet, pinned map[string]string) netip.Addr {
	start := 0
	var startIP netip.Addr
	if last, err := netip.ParseAddr(st.LastReserved[set]); err == nil {
		for ri, r := range rs {
			if r.Contains(last) {
				start, startIP = ri, last.Next()
				break
			}
		}
	}
	gateways := map[netip.Addr]bool{}
	for _, r := range rs {
		if r.Gateway.IsValid() {
			gateways[r.Gateway] = true
		}
	}
	free := func(ip netip.Addr) bool {
		s := ip.String()
		if gateways[ip] {
			return false
		}
		if _, ok := st.Allocations[s]; ok {
			return false
		}
		_, ok := pinned[s]
		return !ok
	}
	// Walk every range once, starting mid-range at startIP, then wrap to
	// cover the part of the first range before startIP.
	for k := 0; k <= len(rs); k++ {
		r := rs[(start+k)%len(rs)]
		from, to := r.RangeStart, r.RangeEnd
		if k == 0 && startIP.IsValid() && r.Contains(startIP) {
			from = startIP
		} else if k == 0 && startIP.IsValid() {
			continue // last reserved was the range's end
		}
		if k == len(rs) {
			if !startIP.IsValid() {
				break
			}
			if startIP.Less(to) {
				to = startIP
			}
		}
		for ip := from; ip.IsValid() && ip.Compare(to) <= 0; ip = ip.Next() {
			if free(ip) {
				return ip
			}
		}
	}
	return netip.Addr{}
}

// reclaim takes the range set's address from the least recently used
// released pin of another pod, when it is free.
func (a *Allocator) reclaim(st *store.State, set int, rs config.RangeSet, key string, now time.Time) netip.Addr {
	var victim *store.Pin
	var vip netip.Addr
	for k, p := range st.Pins {
		if k == key || p.ContainerID != "" || set >= len(p.IPs) {
			continue
		}
		ip, err := netip.ParseAddr(p.IPs[set])
		if err != nil || !rs.Contains(ip) {
			continue
		}
		if _, taken := st.Allocations[ip.String()]; taken {
			continue
		}
		if gw := gatewayOf(rs, ip); gw == ip {
			continue
		}
		if victim == nil || p.LastUsed.Before(victim.LastUsed) || p.LastUsed.Equal(victim.LastUsed) && p.Key < victim.Key {
			victim, vip = p, ip
		}
	}
	if victim == nil {
		return netip.Addr{}
	}
	a.Log.Warn("pool exhausted: reclaimed least recently used released pin", "network", a.Network, "pin", victim.Key, "ip", vip.String(), "lastUsed", victim.LastUsed, "idle", now.Sub(victim.LastUsed).String())
	delete(st.Pins, victim.Key) // a pin is all-or-nothing: its pod gets fresh addresses next time
	return vip
}

func gatewayOf(rs config.RangeSet, ip netip.Addr) netip.Addr {
	for _, r := range rs {
		if r.Contains(ip) {
			return r.Gateway
		}
	}
	return netip.Addr{}
}

// reconcile releases the allocations install imported from host-local
// whose reservation file no longer names their container: that pod's DEL
// went to host-local (flannel replays the delegate config saved at ADD).
func (a *Allocator) reconcile(st *store.State) bool {
	holds := a.HostLocalHolds
	if holds == nil {
		holds = store.HostLocalHolds
	}
	return a.release(st, func(al *store.Allocation) bool {
		return al.Imported && al.HostLocal != "" && !holds(al.HostLocal, al.ContainerID, al.IfName)
	}, "released by host-local")
}

// Del releases what container/ifname holds and keeps its pin. Releasing
// nothing is not an error. The save is store.Deferred: a release a power
// loss undoes is one whose DEL never came, which ADD's stale-sandbox
// takeover and GC already handle.
func (a *Allocator) Del(cid, ifName string) error {
	return a.update(store.Deferred, func(st *store.State) (bool, error) {
		return a.release(st, func(al *store.Allocation) bool { return al.ContainerID == cid && al.IfName == ifName }, "released"), nil
	})
}

func (a *Allocator) release(st *store.State, match func(*store.Allocation) bool, why string) bool {
	now := a.now()
	changed := false
	for ip, al := range st.Allocations {
		if !match(al) {
			continue
		}
		delete(st.Allocations, ip)
		changed = true
		a.dropHostLocal(al)
		if p := st.Pins[al.PinKey]; p != nil && p.ContainerID == al.ContainerID {
			p.ContainerID = ""
			p.LastUsed = now
		}
		a.Log.Info(why, "network", a.Network, "pin", al.PinKey, "container", al.ContainerID, "ifname", al.IfName, "ip", ip)
	}
	return changed
}

// dropHostLocal removes the host-local reservation that uninstall wrote for
// an allocation holdfast-ipam owns (imported ones belong to host-local).
func (a *Allocator) dropHostLocal(al *store.Allocation) {
	if al.HostLocal == "" || al.Imported {
		return
	}
	drop := a.DropHostLocal
	if drop == nil {
		drop = store.DropHostLocal
	}
	if err := drop(al.HostLocal, al.ContainerID, al.IfName); err != nil {
		a.Log.Warn("host-local reservation left behind", "network", a.Network, "ip", al.IP, "file", al.HostLocal, "err", err)
	}
}

// Check returns what container/ifname holds, or ErrNotFound.
func (a *Allocator) Check(cid, ifName string) ([]Lease, error) {
	if err := a.Store.Lock(); err != nil {
		return nil, err
	}
	defer a.Store.Unlock()
	st, err := a.Store.Load()
	if err != nil {
		return nil, err
	}
	held := a.held(st, cid, ifName)
	if len(held) == 0 {
		return nil, fmt.Errorf("container %s interface %s in network %s: %w", cid, ifName, a.Network, ErrNotFound)
	}
	return held, nil
}

// GC releases every allocation whose container/ifname is not in valid.
// Pins are kept (and start ageing).
func (a *Allocator) GC(valid []types.GCAttachment) (int, error) {
	keep := map[[2]string]bool{}
	for _, v := range valid {
		keep[[2]string{v.ContainerID, v.IfName}] = true
	}
	n := 0
	err := a.update(store.Deferred, func(st *store.State) (bool, error) { // releases only, as Del
		changed := a.release(st, func(al *store.Allocation) bool {
			if keep[[2]string{al.ContainerID, al.IfName}] {
				return false
			}
			n++
			return true
		}, "garbage collected")
		return a.expire(st, a.now()) || changed, nil
	})
	return n, err
}

// Status returns nil when the store is readable and every range set has a
// free address (pinned-but-released addresses count: they can be reclaimed).
func (a *Allocator) Status() error {
	if err := a.Store.Lock(); err != nil {
		return err
	}
	defer a.Store.Unlock()
	st, err := a.Store.Load()
	if err != nil {
		return err
	}
	for i, set := range a.Ranges {
		if !a.nextFree(st, i, set, nil).IsValid() {
			return fmt.Errorf("network %s range set %d: %w", a.Network, i, ErrExhausted)
		}
	}
	return nil
}
