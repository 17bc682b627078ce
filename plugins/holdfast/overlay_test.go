package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"github.com/holdfast-edge/holdfast/internal/statefile"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/holdfast-edge/holdfast/internal/vtepmac"
	"github.com/holdfast-edge/holdfast/snapshot"
)

func ipIn(t testing.TB, n ns.NetNS, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", filepath.Base(n.Path())}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

// TestOverlayRestoredOnceAndStatus: the overlay device is captured into a
// snapshot and deleted (what an offline reboot does); 8 pods are added at
// once; the device comes back with its pinned MAC, restored by exactly one
// ADD; STATUS is ready; a wrong MAC or a missing device makes STATUS 50.
func TestOverlayRestoredOnceAndStatus(t *testing.T) {
	e := newCNIEnv(t)
	snapDir := filepath.Join(e.dir, "snapshot")
	// The pin is made (derived from the node name) before the live device
	// exists, so the captured MAC differs from it: restore must use the pin.
	pin, err := vtepmac.Ensure(snapDir, "hf-node", 7, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const live = "0e:11:22:33:44:55"
	mac := pin.MAC
	if mac == live {
		t.Fatalf("setup: pin %s equals the live MAC", mac)
	}
	ipIn(t, e.host, "link", "add", "hf-vx1", "address", live, "type", "vxlan", "id", "7", "dstport", "8472", "nolearning")
	ipIn(t, e.host, "addr", "add", "10.244.1.0/32", "dev", "hf-vx1")
	ipIn(t, e.host, "link", "set", "hf-vx1", "up")
	s, err := snapshot.Capture(context.Background(), snapshot.CaptureOptions{NodeName: "hf-node", Devices: []string{"hf-vx1"}, NetNS: e.host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.PinMACs(snapDir, s, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := snapshot.Save(snapDir, s); err != nil {
		t.Fatal(err)
	}
	ipIn(t, e.host, "link", "del", "hf-vx1")

	overlay := fmt.Sprintf(`,"overlay":{"device":"hf-vx1","nodeName":"hf-node","snapshotDir":%q}`, snapDir)
	list := e.holdfastList(t, "1.1.0", overlay)
	var wg sync.WaitGroup
	for i := range 8 {
		pod := newNetns(t, "pod")
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.add(t, list, rtConf(fmt.Sprintf("ov-%d", i), pod, fmt.Sprintf("ov-%d", i)))
		}()
	}
	wg.Wait()
	log, _ := os.ReadFile(filepath.Join(e.dir, "cni", LogFileName))
	if n := strings.Count(string(log), "overlay restored from snapshot"); n != 1 {
		t.Fatalf("overlay restored %d times by 8 concurrent ADDs, want once:\n%s", n, log)
	}
	if got := linkMAC(t, e.host.Path(), "hf-vx1"); got != mac {
		t.Fatalf("restored device MAC %s, pinned %s (captured %s)", got, mac, live)
	}
	status := func() error {
		return e.host.Do(func(ns.NetNS) error { return e.cni.GetStatusNetworkList(context.Background(), list) })
	}
	if err := status(); err != nil {
		t.Fatalf("STATUS with the overlay restored: %v", err)
	}
	ipIn(t, e.host, "link", "set", "hf-vx1", "address", "0e:99:99:99:99:99")
	if err := status(); !isCode(err, types.ErrPluginNotAvailable, "pinned MAC is "+mac) {
		t.Fatalf("STATUS with a wrong VTEP MAC: %v, want code 50", err)
	}
	ipIn(t, e.host, "link", "del", "hf-vx1")
	if err := status(); !isCode(err, types.ErrPluginNotAvailable, "hf-vx1 is missing") {
		t.Fatalf("STATUS without the overlay device: %v, want code 50", err)
	}
}

func isCode(err error, code uint, mention string) bool {
	te, ok := err.(*types.Error)
	return ok && te.Code == code && strings.Contains(te.Msg, mention)
}

func hashTree(t testing.TB, dir string) string {
	t.Helper()
	h := sha256.New()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".log") {
			return nil
		}
		data, _ := os.ReadFile(p)
		fmt.Fprintf(h, "%s %x\n", p, sha256.Sum256(data))
		return nil
	})
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestBadInput: each bad input gets the right CNI code and a message naming
// the problem, and leaves the data dir as it was.
func TestBadInput(t *testing.T) {
	e := newCNIEnv(t)
	list := e.holdfastList(t, "1.0.0", "")
	pod := newNetns(t, "pod")
	rt := rtConf("keep", pod, "keep")
	e.add(t, list, rt)
	dataDir := filepath.Join(e.dir, "cni")
	rec := filepath.Join(dataDir, "hf-pods", "keep_eth0.json")
	orig, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	prev := `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"0e:00:00:00:00:01","sandbox":"` + pod.Path() + `"}],"ips":[{"address":"10.244.1.9/24","interface":0}]}`
	base := func(extra string) string {
		return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"hf-pods","type":"holdfast","dataDir":%q%s}`, dataDir, extra)
	}
	cases := []struct {
		name, verb, conf string
		setup            func()
		code             uint
		mention          string
	}{
		{"malformed JSON", "ADD", `{"cniVersion":"1.0.0",`, nil, types.ErrDecodingFailure, "network config"},
		{"missing prevResult", "ADD", base(""), nil, types.ErrInvalidNetworkConfig, "no prevResult"},
		{"missing prevResult on CHECK", "CHECK", base(""), nil, types.ErrInvalidNetworkConfig, "no prevResult"},
		{"unknown version", "ADD", strings.Replace(base(`,"prevResult":`+prev), `"1.0.0"`, `"7.0.0"`, 1), nil, types.ErrIncompatibleCNIVersion, "7.0.0"},
		{"bad overlay MAC", "ADD", base(`,"overlay":{"device":"flannel.1","mac":"zz"},"prevResult":` + prev), nil, types.ErrInvalidNetworkConfig, "overlay.mac"},
		{"empty overlay device", "ADD", base(`,"overlay":{},"prevResult":` + prev), nil, types.ErrInvalidNetworkConfig, "overlay.device"},
		{"prevResult not a result", "ADD", base(`,"prevResult":{"cniVersion":"1.0.0","ips":"10.244.1.9/24"}`), nil, types.ErrInvalidNetworkConfig, "cannot parse prevResult"},
		{"prevResult not an object", "CHECK", base(`,"prevResult":[1]`), nil, types.ErrInvalidNetworkConfig, "cannot parse prevResult"},
		{"interface not in prevResult", "ADD", base(`,"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"net9","sandbox":"/x"}]}`), nil, types.ErrInvalidNetworkConfig, "\"eth0\""},
		{"corrupt record on CHECK", "CHECK", base(`,"prevResult":` + prev), func() { os.WriteFile(rec, orig[:len(orig)-20], 0o600) }, types.ErrIOFailure, rec},
		{"future-version record on CHECK", "CHECK", base(`,"prevResult":` + prev), func() {
			os.WriteFile(rec, mustReversion(t, orig, 42), 0o600)
		}, types.ErrIOFailure, "schema version 42"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			os.WriteFile(rec, orig, 0o600)
			if c.setup != nil {
				c.setup()
			}
			before := hashTree(t, e.dir)
			cid := "keep"
			_, te := runPlugin(t, c.verb, pod.Path(), cid, c.conf)
			if te == nil {
				t.Fatalf("%s succeeded on bad input", c.verb)
			}
			if te.Code != c.code || !strings.Contains(te.Msg+te.Details, c.mention) {
				t.Fatalf("got code %d %q (%s), want code %d mentioning %q", te.Code, te.Msg, te.Details, c.code, c.mention)
			}
			if after := hashTree(t, e.dir); after != before {
				t.Fatal("bad input changed state")
			}
			t.Logf("%s %s → code %d: %s", c.name, c.verb, te.Code, te.Msg)
		})
	}
}

func mustReversion(t testing.TB, data []byte, version int) []byte {
	t.Helper()
	out, err := statefile.Reversion(data, version)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
