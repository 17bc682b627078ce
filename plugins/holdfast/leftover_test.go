package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
)

// TestNextCallSweepsKilledPluginsTemp: a plugin killed between writing an
// attachment's temp file and its rename leaves .<cid>_eth0.json.tmp-N in
// the network's data dir (and holdfast-ipam's .state.json.tmp-N in its
// own); the next ADD and the next DEL of any pod remove them.
func TestNextCallSweepsKilledPluginsTemp(t *testing.T) {
	e := newCNIEnv(t)
	list := e.holdfastList(t, "1.0.0", "")
	netDir := filepath.Join(e.dir, "cni", "hf-pods")
	ipamDir := filepath.Join(e.dir, "ipam", "hf-pods")
	plant := func(dir, base string) string {
		f, err := os.CreateTemp(dir, atomicfile.TempPattern(base))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		return f.Name()
	}
	check := func(after string, paths ...string) {
		t.Helper()
		for _, p := range paths {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("leftover %s survived the next %s", filepath.Base(p), after)
			}
		}
	}
	a := newNetns(t, "pod")
	rtA := rtConf("sweep-a", a, "sweep-a")
	e.add(t, list, rtA)
	left := []string{plant(netDir, "killed_eth0.json"), plant(ipamDir, "state.json")}
	e.add(t, list, rtConf("sweep-b", newNetns(t, "pod"), "sweep-b"))
	check("ADD", left...)
	left = []string{plant(netDir, "killed_eth0.json"), plant(ipamDir, "state.json")}
	e.del(t, list, rtA)
	check("DEL", left...)
	if got := attachments(t, e); len(got) != 1 || got[0] != "sweep-b" {
		t.Fatalf("records after the sweep: %v, want [sweep-b]", got)
	}
}
