package leases

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/store"
)

func testNet(t *testing.T) (Network, func(string) string) {
	root := t.TempDir()
	n := Network{Root: root, Name: "cbr0", HostLocalDataDir: "/var/lib/cni/networks", IPAMDataDir: "/var/lib/holdfast/ipam", CacheDir: DefaultCacheDir}
	return n, func(p string) string { return filepath.Join(root, p) }
}

func write(t *testing.T, p, data string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func save(t *testing.T, n Network, st *store.State) {
	t.Helper()
	d := store.New(n.host(n.IPAMDataDir), n.Name)
	if err := d.Lock(); err != nil {
		t.Fatal(err)
	}
	defer d.Unlock()
	if err := d.Save(st, store.Durable); err != nil {
		t.Fatal(err)
	}
}

// Import takes every host-local reservation as its container's allocation,
// pinned to the pod the libcni cache names; it is idempotent.
func TestImportPins(t *testing.T) {
	n, h := testNet(t)
	write(t, h("/var/lib/cni/networks/cbr0/10.244.1.2"), "aaa\r\neth0")
	write(t, h("/var/lib/cni/networks/cbr0/10.244.1.3"), "bbb") // host-local before v0.8
	write(t, h("/var/lib/cni/networks/cbr0/last_reserved_ip.0"), "10.244.1.3")
	cache, _ := json.Marshal(map[string]any{"kind": "cniCacheV1", "containerId": "aaa", "ifName": "eth0", "networkName": "cbr0", "netns": "/var/run/netns/x",
		"cniArgs": [][2]string{{"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", "web"}}})
	write(t, h("/var/lib/cni/results/cbr0-aaa-eth0"), string(cache))
	got, err := Import(n, time.Now())
	if err != nil || len(got) != 2 || got[0].Pod != "shop/web" || got[1].Pod != "" || got[1].IfName != "eth0" {
		t.Fatalf("import: %+v, %v", got, err)
	}
	st, _ := store.New(n.host(n.IPAMDataDir), "cbr0").Load()
	al := st.Allocations["10.244.1.2"]
	if al == nil || !al.Imported || al.HostLocal != "/var/lib/cni/networks/cbr0/10.244.1.2" || st.Pins["cbr0/shop/web/eth0"] == nil || st.Pins["cbr0/shop/web/eth0"].IPs[0] != "10.244.1.2" {
		t.Fatalf("state: %+v %+v", al, st.Pins)
	}
	if again, err := Import(n, time.Now()); err != nil || len(again) != 0 {
		t.Fatalf("second import: %+v, %v", again, err)
	}
}

// An address holdfast-ipam gives another container is refused, naming
// both, and nothing changes.
func TestImportRefusesConflict(t *testing.T) {
	n, h := testNet(t)
	write(t, h("/var/lib/cni/networks/cbr0/10.244.1.5"), "hostlocalcid\r\neth0")
	st := store.NewState("cbr0")
	st.Allocations["10.244.1.5"] = &store.Allocation{IP: "10.244.1.5", ContainerID: "holdfastcid", IfName: "eth0"}
	save(t, n, st)
	before, _ := os.ReadFile(store.New(n.host(n.IPAMDataDir), "cbr0").StatePath())
	_, err := Import(n, time.Now())
	if err == nil || !strings.Contains(err.Error(), "10.244.1.5") || !strings.Contains(err.Error(), "hostlocalcid") || !strings.Contains(err.Error(), "holdfastcid") {
		t.Fatalf("want a refusal naming the address and both containers, got %v", err)
	}
	if after, _ := os.ReadFile(store.New(n.host(n.IPAMDataDir), "cbr0").StatePath()); string(after) != string(before) {
		t.Fatal("refused import changed holdfast-ipam's state")
	}
}

// HandBack reserves holdfast-ipam's live addresses in host-local, drops
// the imported ones, and refuses, changing nothing, when host-local
// already gives one to another container.
func TestHandBack(t *testing.T) {
	n, h := testNet(t)
	write(t, h("/var/lib/cni/networks/cbr0/10.244.1.2"), "old\r\neth0")
	st := store.NewState("cbr0")
	st.Allocations["10.244.1.2"] = &store.Allocation{IP: "10.244.1.2", ContainerID: "old", IfName: "eth0", Imported: true, HostLocal: "/var/lib/cni/networks/cbr0/10.244.1.2"}
	st.Allocations["10.244.1.7"] = &store.Allocation{IP: "10.244.1.7", ContainerID: "new", IfName: "eth0", PinKey: "cbr0/shop/b/eth0"}
	st.Pins["cbr0/shop/b/eth0"] = &store.Pin{Key: "cbr0/shop/b/eth0", Namespace: "shop", Name: "b", IfName: "eth0", IPs: []string{"10.244.1.7"}, ContainerID: "new"}
	save(t, n, st)

	write(t, h("/var/lib/cni/networks/cbr0/10.244.1.7"), "someoneelse\r\neth0")
	if _, err := HandBack(n); err == nil || !strings.Contains(err.Error(), "10.244.1.7") || !strings.Contains(err.Error(), "shop/b") {
		t.Fatalf("want a refusal naming 10.244.1.7 and shop/b, got %v", err)
	}
	if st2, _ := store.New(n.host(n.IPAMDataDir), "cbr0").Load(); st2.Allocations["10.244.1.2"] == nil {
		t.Fatal("refused hand-back changed holdfast-ipam's state")
	}
	os.Remove(h("/var/lib/cni/networks/cbr0/10.244.1.7"))

	kept, err := HandBack(n)
	if err != nil || len(kept) != 1 || kept[0].Pod != "shop/b" {
		t.Fatalf("hand-back: %+v, %v", kept, err)
	}
	if data, _ := os.ReadFile(h("/var/lib/cni/networks/cbr0/10.244.1.7")); string(data) != "new\r\neth0" {
		t.Fatalf("host-local reservation %q, want host-local's format for container new", data)
	}
	st2, _ := store.New(n.host(n.IPAMDataDir), "cbr0").Load()
	if st2.Allocations["10.244.1.2"] != nil || st2.Allocations["10.244.1.7"].HostLocal != "/var/lib/cni/networks/cbr0/10.244.1.7" {
		t.Fatalf("state after hand-back: %+v", st2.Allocations)
	}
}
