package allocator

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/config"
	"github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/store"
)

// memStore is an in-memory Store for policy unit tests; it round-trips the
// state through JSON like the disk store does.
type memStore struct {
	data   []byte
	locked bool
	saves  []store.Durability // of every Save, in order
}

func (m *memStore) Lock() error {
	if m.locked {
		return fmt.Errorf("double lock")
	}
	m.locked = true
	return nil
}
func (m *memStore) Unlock() error { m.locked = false; return nil }
func (m *memStore) Load() (*store.State, error) {
	st := store.NewState("n")
	if m.data == nil {
		return st, nil
	}
	return st, json.Unmarshal(m.data, st)
}
func (m *memStore) Save(st *store.State, dur store.Durability) error {
	if !m.locked {
		return fmt.Errorf("save without lock")
	}
	m.saves = append(m.saves, dur)
	var err error
	m.data, err = json.Marshal(st)
	return err
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newAlloc(t *testing.T, subnet string, ttl string) (*Allocator, *memStore, *clock) {
	t.Helper()
	n, err := config.Parse([]byte(fmt.Sprintf(`{"name":"n","ipam":{"type":"holdfast-ipam","pinTTL":%q,"ranges":[[{"subnet":%q}]]}}`, ttl, subnet)))
	if err != nil {
		t.Fatal(err)
	}
	ms := &memStore{}
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	a := New(ms, n, nil)
	a.Now = c.now
	a.NetnsGone = func(string) bool { return true }
	return a, ms, c
}

func pod(name string) config.PodArgs { return config.PodArgs{Namespace: "ns", Name: name} }

func add(t *testing.T, a *Allocator, cid, name string) string {
	t.Helper()
	ls, err := a.Add(Request{ContainerID: cid, IfName: "eth0", Pod: pod(name), Netns: "/ns/" + cid})
	if err != nil {
		t.Fatalf("add %s: %v", name, err)
	}
	return ls[0].IP.String()
}

// /29: .1 gateway, .2-.6 allocatable (5 addresses).
func TestPinsHonouredUntilExhaustedThenLRUReclaim(t *testing.T) {
	a, _, c := newAlloc(t, "10.0.0.0/29", "720h")
	ips := map[string]string{}
	for i := range 5 {
		c.t = c.t.Add(time.Minute)
		ips[fmt.Sprint(i)] = add(t, a, fmt.Sprintf("c%d", i), fmt.Sprintf("p%d", i))
	}
	// Release p0..p2 at increasing times: p1 is the least recently used.
	for _, i := range []int{1, 0, 2} {
		c.t = c.t.Add(time.Minute)
		if err := a.Del(fmt.Sprintf("c%d", i), "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	// A new pod: no unpinned free address, so it reclaims p1's (LRU) pin.
	got := add(t, a, "n1", "new1")
	if got != ips["1"] {
		t.Fatalf("new pod got %s, want LRU released pin of p1 %s", got, ips["1"])
	}
	got = add(t, a, "n2", "new2")
	if got != ips["0"] {
		t.Fatalf("second new pod got %s, want p0's %s (next LRU)", got, ips["0"])
	}
	// p2 still gets its own pin back.
	if got := add(t, a, "c2b", "p2"); got != ips["2"] {
		t.Fatalf("p2 got %s, pinned %s", got, ips["2"])
	}
	// Now truly exhausted.
	if _, err := a.Add(Request{ContainerID: "x", IfName: "eth0", Pod: pod("x")}); err == nil {
		t.Fatal("allocated from an exhausted pool")
	}
	// p1 lost its pin: it gets a fresh address once one is free.
	a.Del("n2", "eth0")
	if got := add(t, a, "c1b", "p1"); got != ips["0"] {
		t.Fatalf("p1 after reclaim got %s, want the only free %s", got, ips["0"])
	}
}

func TestUnpinnedFreeAddressPreferredOverReclaim(t *testing.T) {
	a, _, _ := newAlloc(t, "10.0.0.0/29", "720h")
	p0 := add(t, a, "c0", "p0")
	a.Del("c0", "eth0")
	for i := range 4 {
		if got := add(t, a, fmt.Sprintf("o%d", i), fmt.Sprintf("o%d", i)); got == p0 {
			t.Fatalf("o%d took p0's pin %s while unpinned addresses were free", i, p0)
		}
	}
}

func TestPinTTLExpiry(t *testing.T) {
	a, ms, c := newAlloc(t, "10.0.0.0/24", "1h")
	ip := add(t, a, "c0", "p0")
	a.Del("c0", "eth0")
	c.t = c.t.Add(59 * time.Minute)
	st, _ := ms.Load()
	if len(st.Pins) != 1 {
		t.Fatal("pin gone too early")
	}
	c.t = c.t.Add(2 * time.Minute)
	add(t, a, "c1", "p1") // any write expires
	st, _ = ms.Load()
	if _, ok := st.Pins["n/ns/p0/eth0"]; ok {
		t.Fatalf("pin of p0 (%s) outlived its TTL", ip)
	}
	// An active pin never expires.
	c.t = c.t.Add(10 * time.Hour)
	add(t, a, "c2", "p2")
	st, _ = ms.Load()
	if _, ok := st.Pins["n/ns/p1/eth0"]; !ok {
		t.Fatal("active pin of p1 expired")
	}
}

func TestRepeatedAddIsIdempotent(t *testing.T) {
	a, ms, _ := newAlloc(t, "10.0.0.0/24", "1h")
	x := add(t, a, "c0", "p0")
	if y := add(t, a, "c0", "p0"); x != y {
		t.Fatalf("repeated ADD got %s then %s", x, y)
	}
	st, _ := ms.Load()
	if len(st.Allocations) != 1 {
		t.Fatalf("repeated ADD allocated twice: %v", st.Allocations)
	}
}

func TestStaleSandboxTakeoverOnlyWhenNetnsGone(t *testing.T) {
	a, _, _ := newAlloc(t, "10.0.0.0/24", "1h")
	alive := true
	a.NetnsGone = func(string) bool { return !alive }
	x := add(t, a, "old", "p0")
	// Old sandbox still alive: the new one must not share its address.
	y := add(t, a, "new", "p0")
	if x == y {
		t.Fatalf("two live sandboxes of p0 share %s", x)
	}
	a.Del("new", "eth0")
	// After a reboot (old netns gone, no DEL ever came), the pin, which moved
	// to y, comes back; x is still held by the dead sandbox until GC.
	alive = false
	if z := add(t, a, "after-reboot", "p0"); z != y {
		t.Fatalf("after reboot got %s, pin is %s", z, y)
	}
	n, err := a.GC([]types.GCAttachment{{ContainerID: "after-reboot", IfName: "eth0"}})
	if err != nil || n != 1 {
		t.Fatalf("GC released %d (%v), want the dead sandbox's 1", n, err)
	}
}

func TestReclaimLeavesGatewayAndDualStack(t *testing.T) {
	n, err := config.Parse([]byte(`{"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/29"}],[{"subnet":"fd00::/125"}]]}}`))
	if err != nil {
		t.Fatal(err)
	}
	a := New(&memStore{}, n, nil)
	ls, err := a.Add(Request{ContainerID: "c", IfName: "eth0", Pod: pod("d")})
	if err != nil || len(ls) != 2 || !ls[0].IP.Is4() || !ls[1].IP.Is6() {
		t.Fatalf("dual stack: %v %v", ls, err)
	}
	if ls[0].IP.String() == "10.0.0.1" || ls[1].IP.String() == "fd00::1" {
		t.Fatalf("handed out a gateway: %v", ls)
	}
}

// An allocation imported from host-local is released once host-local's
// reservation no longer names its container (the pod's DEL went there), and
// its pin then gives the pod the same address back; a handed-back one is
// owned by holdfast-ipam, which removes host-local's file on release.
func TestImportedAndHandedBackAllocations(t *testing.T) {
	a, ms, _ := newAlloc(t, "10.1.0.0/24", "1h")
	files := map[string]string{"/hl/10.1.0.9": "old", "/hl/10.1.0.7": "new"}
	a.HostLocalHolds = func(p, cid, _ string) bool { return files[p] == cid }
	a.DropHostLocal = func(p, cid, _ string) error {
		if files[p] == cid {
			delete(files, p)
		}
		return nil
	}
	st := store.NewState("n")
	st.Allocations["10.1.0.9"] = &store.Allocation{IP: "10.1.0.9", ContainerID: "old", IfName: "eth0", PinKey: "n/ns/web/eth0", HostLocal: "/hl/10.1.0.9", Imported: true}
	st.Pins["n/ns/web/eth0"] = &store.Pin{Key: "n/ns/web/eth0", Namespace: "ns", Name: "web", IfName: "eth0", IPs: []string{"10.1.0.9"}, ContainerID: "old"}
	st.Allocations["10.1.0.7"] = &store.Allocation{IP: "10.1.0.7", ContainerID: "new", IfName: "eth0", HostLocal: "/hl/10.1.0.7"}
	ms.locked = true
	ms.Save(st, store.Durable)
	ms.locked = false

	// host-local still holds .9: a new pod must not get it.
	if ls, err := a.Add(Request{ContainerID: "c1", IfName: "eth0", Pod: config.PodArgs{Namespace: "ns", Name: "other"}}); err != nil || ls[0].IP.String() == "10.1.0.9" || ls[0].IP.String() == "10.1.0.7" {
		t.Fatalf("new pod got %v, %v", ls, err)
	}
	delete(files, "/hl/10.1.0.9") // host-local DEL of the imported pod
	valid := []types.GCAttachment{{ContainerID: "old", IfName: "eth0"}, {ContainerID: "new", IfName: "eth0"}, {ContainerID: "c1", IfName: "eth0"}}
	if _, err := a.GC(valid); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Check("old", "eth0"); err == nil {
		t.Fatal("host-local released the imported address, holdfast-ipam still holds it")
	}
	ls, err := a.Add(Request{ContainerID: "c2", IfName: "eth0", Pod: config.PodArgs{Namespace: "ns", Name: "web"}})
	if err != nil || ls[0].IP.String() != "10.1.0.9" {
		t.Fatalf("web re-created: %v, %v; want its imported pin 10.1.0.9", ls, err)
	}
	if err := a.Del("new", "eth0"); err != nil {
		t.Fatal(err)
	}
	if _, ok := files["/hl/10.1.0.7"]; ok {
		t.Fatal("releasing a handed-back allocation left its host-local reservation")
	}
}

// TestAddDurableReleasesDeferred: ADD's save is on disk before the plugin
// answers (a new pod's pin survives a power loss); DEL's and GC's saves
// skip the directory fsync (docs/cni.md: a release a power loss undoes is
// a DEL that never came).
func TestAddDurableReleasesDeferred(t *testing.T) {
	a, ms, _ := newAlloc(t, "10.1.0.0/24", "1h")
	add(t, a, "c1", "web")
	add(t, a, "c2", "db")
	if err := a.Del("c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GC([]types.GCAttachment{{ContainerID: "c1", IfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	want := []store.Durability{store.Durable, store.Durable, store.Deferred, store.Deferred}
	if !slices.Equal(ms.saves, want) {
		t.Fatalf("saves %v, want %v (0 = Durable, 1 = Deferred)", ms.saves, want)
	}
}
