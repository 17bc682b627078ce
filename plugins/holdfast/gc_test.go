package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/store"
)

// TestGCReachesIPAM: sandboxes killed without a DEL get their addresses
// back after one GC through the chain (bridge v1.9.1 + holdfast-ipam →
// holdfast → portmap, as install writes it). libcni DELs the stale
// attachments it has cached; for one whose cache entry is gone only the
// chained plugin's GC, forwarded to holdfast-ipam, can release it (bridge
// has no GC).
func TestGCReachesIPAM(t *testing.T) {
	e := newCNIEnv(t)
	ipamDir := filepath.Join(e.dir, "ipam")
	list := e.holdfastList(t, "1.1.0", fmt.Sprintf(`,"ipam":{"type":"holdfast-ipam","dataDir":%q}`, ipamDir))
	var rts []*libcni.RuntimeConf
	ips := map[string]string{}
	for _, name := range []string{"cached", "uncached", "alive"} {
		pod := newNetns(t, "pod")
		rt := rtConf(name+"-"+randSuffix(), pod, name)
		ips[name], _ = e.add(t, list, rt)
		rts = append(rts, rt)
	}
	// Kill the first two sandboxes without a DEL; the second one's libcni
	// cache entry is lost too.
	for _, rt := range rts[:2] {
		if out, err := exec.Command("ip", "netns", "del", filepath.Base(rt.NetNS)).CombinedOutput(); err != nil {
			t.Fatalf("kill sandbox: %v: %s", err, out)
		}
	}
	if err := os.Remove(filepath.Join(e.dir, "cache", "results", "hf-pods-"+rts[1].ContainerID+"-eth0")); err != nil {
		t.Fatal(err)
	}
	err := e.host.Do(func(ns.NetNS) error {
		return e.cni.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: rts[2].ContainerID, IfName: "eth0"}}})
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	st, err := store.New(ipamDir, "hf-pods").Load()
	if err != nil {
		t.Fatal(err)
	}
	for name, ip := range ips {
		al, held := st.Allocations[ip]
		if want := name == "alive"; held != want {
			t.Errorf("after one GC, %s's %s held=%v (%+v), want %v", name, ip, held, al, want)
		}
	}
	t.Logf("GC released %s and %s, kept %s", ips["cached"], ips["uncached"], ips["alive"])
}
