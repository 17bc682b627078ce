package watch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/holdfast-edge/holdfast/snapshot"
)

func ipn(t *testing.T, ns string, args string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", ns}, strings.Fields(args)...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", ns, args, err, out)
	}
}

// TestOnceWritesOnlyOnChangeAndNeverDropsADevice drives Once in a
// throwaway namespace: first capture writes, an unchanged capture does not,
// a new route does, and a capture without flannel.1 keeps the snapshot.
func TestOnceWritesOnlyOnChangeAndNeverDropsADevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces)")
	}
	b := make([]byte, 4)
	rand.Read(b)
	ns := "hf-snapw-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	ipn(t, ns, "link set lo up")
	ipn(t, ns, "link add hf-ul0 type veth peer name hf-ul1")
	ipn(t, ns, "addr add 198.51.100.12/24 dev hf-ul0")
	ipn(t, ns, "link set hf-ul0 up")
	ipn(t, ns, "link set hf-ul1 up")
	ipn(t, ns, "link add flannel.1 type vxlan id 1 local 198.51.100.12 dev hf-ul0 dstport 8472 nolearning")
	ipn(t, ns, "addr add 10.244.2.0/32 dev flannel.1")
	ipn(t, ns, "link set flannel.1 up")
	ipn(t, ns, "route add 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink")

	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	w, err := New(Config{Dir: dir, Registry: reg, Capture: snapshot.CaptureOptions{NodeName: "node2", NetNS: "/var/run/netns/" + ns}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	once := func() {
		t.Helper()
		if err := w.Once(ctx); err != nil {
			t.Fatal(err)
		}
	}
	once()
	once()
	if got := testutil.ToFloat64(w.writes); got != 1 {
		t.Fatalf("writes after two equal captures: %v", got)
	}
	ipn(t, ns, "route add 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink")
	once()
	if got := testutil.ToFloat64(w.writes); got != 2 {
		t.Fatalf("writes after a route change: %v", got)
	}
	ipn(t, ns, "link del flannel.1")
	once()
	s, err := snapshot.LoadFile(filepath.Join(dir, snapshot.CurrentFile))
	if err != nil {
		t.Fatal(err)
	}
	if d := s.Device("flannel.1"); d == nil || len(d.Routes) != 2 {
		t.Fatalf("snapshot lost flannel.1 when the device vanished: %+v", s.Devices)
	}
	if err := w.Healthy(); err != nil {
		t.Fatal(err)
	}
}
