package status

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/cri-shim/record"
	"github.com/holdfast-edge/holdfast/internal/statefile"
	ipamstore "github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/store"
)

func dirs(t *testing.T) Dirs {
	root := t.TempDir()
	return Dirs{Snapshot: filepath.Join(root, "snapshot"), CRI: filepath.Join(root, "cri"), IPAM: filepath.Join(root, "ipam"),
		Health: filepath.Join(root, "health"), DNS: filepath.Join(root, "dns")}
}

// TestNothingInstalledYet: every section says absent, none fails.
func TestNothingInstalledYet(t *testing.T) {
	d := dirs(t)
	src := NodeSources(d)
	r := Gather(context.Background(), "edge-a1", src, time.Now())
	for name, s := range map[string]Section{"snapshot": r.Snapshot.Section, "pods": r.Pods.Section, "pins": r.Pins.Section, "peers": r.Peers.Section, "dns": r.DNS.Section} {
		if s.State != Absent {
			t.Errorf("%s: %s (%s), want absent", name, s.State, s.Reason)
		}
	}
	// Status only reads: it created nothing.
	for _, p := range []string{d.Snapshot, d.CRI, d.IPAM, d.Health, d.DNS} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("status created %s", p)
		}
	}
	var buf bytes.Buffer
	WriteText(&buf, r)
	if !strings.Contains(buf.String(), "snapshot  absent") || !strings.Contains(buf.String(), "cloud     unknown") {
		t.Fatalf("text:\n%s", buf.String())
	}
}

// TestRealStateFiles: files written by the components' own stores are read;
// a corrupt one makes only its section unknown.
func TestRealStateFiles(t *testing.T) {
	d := dirs(t)
	// holdfast-ipam: one pin in use, one released.
	disk := ipamstore.New(d.IPAM, "cbr0")
	st := ipamstore.NewState("cbr0")
	st.Pins["cbr0/default/web-0/eth0"] = &ipamstore.Pin{Key: "cbr0/default/web-0/eth0", Namespace: "default", Name: "web-0", IfName: "eth0", IPs: []string{"10.244.1.5"}, ContainerID: "abc"}
	st.Pins["cbr0/default/web-1/eth0"] = &ipamstore.Pin{Key: "cbr0/default/web-1/eth0", Namespace: "default", Name: "web-1", IfName: "eth0", IPs: []string{"10.244.1.6"}}
	// A pin naming a container but no allocation is not in use (counting
	// pins said "12 in use" with 11 pods alive); an allocation whose netns
	// is gone is stale.
	st.Pins["cbr0/default/web-3/eth0"] = &ipamstore.Pin{Key: "cbr0/default/web-3/eth0", Namespace: "default", Name: "web-3", IfName: "eth0", IPs: []string{"10.244.1.8"}, ContainerID: "zzz"}
	st.Allocations["10.244.1.5"] = &ipamstore.Allocation{IP: "10.244.1.5", ContainerID: "abc", IfName: "eth0", PinKey: "cbr0/default/web-0/eth0"}
	st.Allocations["10.244.1.7"] = &ipamstore.Allocation{IP: "10.244.1.7", ContainerID: "dead", IfName: "eth0", Netns: filepath.Join(d.IPAM, "no-such-netns")}
	if err := os.MkdirAll(filepath.Dir(disk.StatePath()), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := disk.Lock(); err != nil {
		t.Fatal(err)
	}
	if err := disk.Save(st, ipamstore.Durable); err != nil {
		t.Fatal(err)
	}
	disk.Unlock()
	// CRI shim: two pods, one relaunched.
	for _, p := range []record.Pod{
		{UID: "u1", Name: "web-0", Namespace: "default", Relaunch: &record.Relaunch{Outcome: "relaunched", Adopted: true}},
		{UID: "u2", Name: "db-0", Namespace: "prod", Relaunch: &record.Relaunch{Outcome: "failed", Error: "image missing"}},
	} {
		if err := statefile.Save(filepath.Join(d.CRI, "pods", p.UID+".json"), record.PodKind, record.PodVersion, p); err != nil {
			t.Fatal(err)
		}
	}
	// DNS: a corrupt snapshot.
	os.MkdirAll(d.DNS, 0o755)
	os.WriteFile(filepath.Join(d.DNS, "snapshot.json"), []byte("{garbage"), 0o600)

	src := NodeSources(d)
	src.Cloud = "198.51.100.1:6443"
	src.Dial = func(ctx context.Context, addr string) error { return errors.New("i/o timeout") }
	r := Gather(context.Background(), "edge-a1", src, time.Now())
	if r.Pins.State != OK || r.Pins.InUse != 1 || r.Pins.Stale != 1 || r.Pins.Released != 2 {
		t.Errorf("pins: %+v", r.Pins)
	}
	if r.Pods.State != OK || len(r.Pods.Pods) != 2 || r.Pods.Pods[0].Name != "default/web-0" || r.Pods.Pods[1].Error != "image missing" {
		t.Errorf("pods: %+v", r.Pods)
	}
	if r.DNS.State != Unknown || !strings.Contains(r.DNS.Reason, "snapshot.json") {
		t.Errorf("dns: %+v", r.DNS)
	}
	if r.Cloud.State != OK || r.Cloud.Reachable {
		t.Errorf("cloud: %+v", r.Cloud)
	}
	var buf bytes.Buffer
	WriteText(&buf, r)
	for _, want := range []string{"2 recorded; relaunch: failed 1, relaunched 1", "prod/db-0: failed: image missing", "1 in use, 1 stale (sandbox gone, released at the next GC), 2 released", "dns       unknown", "UNREACHABLE"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, buf.String())
		}
	}
	buf.Reset()
	if err := WriteJSON(&buf, r); err != nil || !strings.Contains(buf.String(), `"inUse": 1`) {
		t.Fatalf("json: %v\n%s", err, buf.String())
	}
}

func TestPanickingReaderIsContained(t *testing.T) {
	r := Gather(context.Background(), "n", Sources{Pins: func() (PinsSection, error) { panic("boom") }}, time.Now())
	if r.Pins.State != Unknown || !strings.Contains(r.Pins.Reason, "boom") || r.Snapshot.State != Unknown {
		t.Fatalf("%+v %+v", r.Pins, r.Snapshot)
	}
}
