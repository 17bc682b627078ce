package status

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/statefile"
	ipamstore "github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/store"
)

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestNodeRootLeases: a node root with holdfast installed over a flannel
// network. status says it is installed, counts live leases per store, tells
// a mirrored address (same container in both stores) from one two
// containers hold, and names the pod whose saved chain needs a plugin the
// bin dir lacks.
func TestNodeRootLeases(t *testing.T) {
	root := t.TempDir()
	d := DefaultDirs()
	d.Root = root
	h := func(p string) string { return filepath.Join(root, p) }
	writeFile(t, h("etc/cni/net.d/10-flannel.conflist"), `{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"isDefaultGateway":true}},{"type":"portmap"}]}`)
	writeFile(t, h("etc/cni/net.d/00-holdfast.conflist"), `{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","ipam":{"type":"holdfast-ipam"}},{"type":"holdfast"},{"type":"portmap"}]}`)
	for _, p := range []string{"flannel", "bridge", "host-local", "holdfast"} {
		writeFile(t, h("opt/cni/bin/"+p), "bin")
	}
	hl := "var/lib/cni/networks/cbr0/"
	writeFile(t, h(hl+"10.244.1.2"), "old\r\neth0")   // imported, mirrored
	writeFile(t, h(hl+"10.244.1.3"), "other\r\neth0") // conflict
	writeFile(t, h(hl+"10.244.1.4"), "only\r\neth0")  // host-local only
	st := ipamstore.NewState("cbr0")
	st.Allocations["10.244.1.2"] = &ipamstore.Allocation{IP: "10.244.1.2", ContainerID: "old", IfName: "eth0", HostLocal: "/" + hl + "10.244.1.2", Imported: true}
	st.Allocations["10.244.1.3"] = &ipamstore.Allocation{IP: "10.244.1.3", ContainerID: "new", IfName: "eth0", PinKey: "cbr0/shop/b-0/eth0"}
	st.Pins["cbr0/shop/b-0/eth0"] = &ipamstore.Pin{Key: "cbr0/shop/b-0/eth0", Namespace: "shop", Name: "b-0", IfName: "eth0", IPs: []string{"10.244.1.3"}, ContainerID: "new"}
	disk := ipamstore.New(h("var/lib/holdfast/ipam"), "cbr0")
	if err := disk.Lock(); err != nil {
		t.Fatal(err)
	}
	if err := disk.Save(st, ipamstore.Durable); err != nil {
		t.Fatal(err)
	}
	disk.Unlock()
	conf, _ := json.Marshal(map[string]any{"name": "cbr0", "plugins": []map[string]any{{"type": "flannel"}, {"type": "holdfast"}, {"type": "portmap"}}})
	cache, _ := json.Marshal(map[string]any{"kind": "cniCacheV1", "containerId": "new", "ifName": "eth0", "networkName": "cbr0", "config": conf,
		"cniArgs": [][2]string{{"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", "b-0"}}})
	writeFile(t, h("var/lib/cni/results/cbr0-new-eth0"), string(cache))
	writeFile(t, h("var/lib/cni/flannel/new"), `{"type":"bridge","name":"cbr0","ipam":{"type":"holdfast-ipam"}}`)
	if err := statefile.Save(h("var/lib/holdfast/install/record.json"), installRecordKind, installRecordVersion, map[string]any{"files": []map[string]string{{"path": "/opt/cni/bin/holdfast"}, {"path": "/opt/cni/bin/holdfast-ipam"}}}); err != nil {
		t.Fatal(err)
	}

	r := Gather(context.Background(), "n", NodeSources(d), time.Now())
	if !r.Install.Installed || r.Install.Files != 2 || r.Install.IPAMOnly {
		t.Errorf("install: %+v", r.Install)
	}
	l := r.Leases
	want := []StoreCount{{"host-local", "cbr0", 3}, {"holdfast-ipam", "cbr0", 2}}
	if l.State != OK || len(l.Stores) != 2 || l.Stores[0] != want[0] || l.Stores[1] != want[1] || l.Mirrored != 1 || len(l.Conflicts) != 1 || !strings.Contains(l.Conflicts[0], "10.244.1.3") {
		t.Errorf("leases: %+v", l)
	}
	if len(l.MissingPlugins) != 1 || !strings.Contains(l.MissingPlugins[0], "shop/b-0") || !strings.Contains(l.MissingPlugins[0], "holdfast-ipam, portmap") {
		t.Errorf("missing plugins: %v", l.MissingPlugins)
	}
	var buf bytes.Buffer
	WriteText(&buf, r)
	for _, s := range []string{"installed (2 files", "HELD IN TWO STORES: cbr0/10.244.1.3", "PLUGIN MISSING: shop/b-0"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("text lacks %q:\n%s", s, buf.String())
		}
	}
	// Not installed: says so.
	os.Remove(h("var/lib/holdfast/install/record.json"))
	if r := Gather(context.Background(), "n", NodeSources(d), time.Now()); r.Install.State != OK || r.Install.Installed {
		t.Errorf("no record: %+v", r.Install)
	}
}
