package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// TestSameIPAndMACAfterReboot: a pod on a harness node gets its IP and MAC
// through bridge+holdfast-ipam → holdfast → portmap; the node reboots
// offline (netns, links, pods and /run gone, var dir kept, no DEL ever
// sent); the pod's sandbox is re-created with a new container ID and gets
// the same IP and MAC.
func TestSameIPAndMACAfterReboot(t *testing.T) {
	harness.RequireRoot(t)
	site := harness.NewSite(t, 1)
	n := site.Node(1)
	conflist := n.BridgeConflist(
		map[string]any{"type": "holdfast-ipam", "dataDir": filepath.Join(n.VarDir, "holdfast", "ipam")},
		map[string]any{"type": "holdfast", "dataDir": filepath.Join(n.VarDir, "holdfast", "cni")},
		map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}},
	)
	data, err := json.Marshal(conflist)
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	var podNS ns.NetNS
	addIn := func(cid string) (ip, mac string) {
		nodeNS, err := ns.GetNS(n.NSPath)
		if err != nil {
			t.Fatal(err)
		}
		defer nodeNS.Close()
		// libcni's result cache lives in the node's /run, like containerd's.
		e := &cniEnv{host: nodeNS, dir: n.VarDir, cni: libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, filepath.Join(n.RunDir, "cni-cache"), nil)}
		podNS = newNetns(t, "pod")
		return e.add(t, list, rtConf(cid, podNS, "db-0"))
	}
	ip1, mac1 := addIn("before-reboot")
	// A reboot also ends every pod netns; this one lives outside the node
	// dir, so it is deleted here, as the kernel would.
	if err := n.Reboot(func() error {
		podNS.Close()
		return exec.Command("ip", "netns", "del", filepath.Base(podNS.Path())).Run()
	}); err != nil {
		t.Fatal(err)
	}
	ip2, mac2 := addIn("after-reboot")
	if ip1 != ip2 || mac1 != mac2 {
		t.Fatalf("after reboot db-0 got %s/%s, had %s/%s", ip2, mac2, ip1, mac1)
	}
	t.Logf("db-0 kept %s %s across an offline reboot of %s", ip2, mac2, n.Name)
}
