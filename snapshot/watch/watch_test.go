package watch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/holdfast-edge/holdfast/snapshot"
	"github.com/holdfast-edge/holdfast/test/harness"
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
	w, err := New(Config{Dir: dir, Registry: reg, Interval: DefaultInterval, MinGap: DefaultMinGap, Capture: snapshot.CaptureOptions{NodeName: "node2", NetNS: "/var/run/netns/" + ns}})
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
	// No rule changed between the two: the second kept the first's rules.
	if got := gathered(t, reg, "holdfast_snapshot_rule_reads_skipped_total"); got != 1 {
		t.Fatalf("holdfast_snapshot_rule_reads_skipped_total after two captures with no rule change: %v, want 1", got)
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

// TestRunCapturesNFTablesCommit runs the daemon loop with a one-hour
// interval: a table kube-proxy writes reaches the snapshot through the
// nftables monitor alone, and its deletion does not drop it from the
// snapshot.
func TestRunCapturesNFTablesCommit(t *testing.T) {
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
	nft := func(script string) {
		t.Helper()
		cmd := exec.Command("nsenter", "--net=/var/run/netns/"+ns, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
	}
	dir := t.TempDir()
	w, err := New(Config{Dir: dir, Registry: prometheus.NewRegistry(), Interval: time.Hour, MinGap: 50 * time.Millisecond,
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Capture: snapshot.CaptureOptions{NodeName: "node2", NetNS: "/var/run/netns/" + ns, NFTables: snapshot.DefaultNFTables()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	tableIn := func() (*snapshot.NFTable, error) {
		s, err := snapshot.LoadFile(filepath.Join(dir, snapshot.CurrentFile))
		if err != nil {
			return nil, err
		}
		if tb := s.NFTable("ip kube-proxy"); tb != nil && strings.Contains(tb.Text, "10.96.0.10") {
			return tb, nil
		}
		return nil, errors.New("ip kube-proxy with 10.96.0.10 not in the snapshot yet")
	}
	// The first capture (empty namespace) lands before the table.
	if err := harness.Eventually(5*time.Second, func() error {
		_, err := os.Stat(filepath.Join(dir, snapshot.CurrentFile))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	nft("table ip kube-proxy {\n\tset cluster-ips {\n\t\ttype ipv4_addr\n\t\telements = { 10.96.0.10 }\n\t}\n}\n")
	added := time.Now()
	if err := harness.Eventually(2*time.Second, func() error { _, err := tableIn(); return err }); err != nil {
		t.Fatalf("nftables commit not captured within 2 s: %v", err)
	}
	t.Logf("nftables table captured %s after the commit", time.Since(added).Round(time.Millisecond))
	// The deletion's commit makes the watcher capture again; a second,
	// unrelated commit makes it capture once more, which it starts only
	// when the first capture's write decision is done.
	captured := func(n float64) {
		t.Helper()
		if err := harness.Eventually(2*time.Second, func() error {
			if testutil.ToFloat64(w.captures) < n {
				return errors.New("no capture since the last commit")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	before := testutil.ToFloat64(w.captures)
	nft("delete table ip kube-proxy\n")
	captured(before + 1)
	nft("table ip hf-other {\n}\n")
	captured(before + 2)
	if _, err := tableIn(); err != nil {
		t.Fatalf("a capture without the table dropped it from the snapshot: %v", err)
	}
}

// TestNewRefusesZeroPeriods: a zero interval or min gap is refused with the
// setting's name, not replaced by the default.
func TestNewRefusesZeroPeriods(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"interval": func(c *Config) { c.Interval = 0 },
		"min gap":  func(c *Config) { c.MinGap = -time.Second },
	} {
		c := Config{Dir: t.TempDir(), Interval: DefaultInterval, MinGap: DefaultMinGap, Capture: snapshot.CaptureOptions{NodeName: "node1"}}
		mod(&c)
		if _, err := New(c); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v, want an error naming it", name, err)
		}
	}
}

// gathered returns the value of the registry's counter name.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s registered", name)
	return 0
}
