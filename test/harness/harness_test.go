package harness_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// hostState is what the harness must never change on the host.
func hostState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"ip", "-o", "link", "show"}, {"ip", "route", "show", "table", "all"}, {"iptables-save"}} {
		out, err := runHost(args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		b.WriteString(out)
	}
	// Packet counters change on their own; rule text must not.
	return regexp.MustCompile(`\[\d+:\d+\]`).ReplaceAllString(b.String(), "")
}

func TestSiteOverlayRebootAndCleanup(t *testing.T) {
	hostBefore := hostState(t)
	site := harness.NewSite(t, 3, harness.WithContainerd(), harness.WithCloud())
	site.Overlay()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	for _, n := range site.Nodes {
		if _, err := n.Exec(ctx, "ip", "route", "get", "1.1.1.1"); err == nil {
			t.Fatalf("%s has a route out of the site", n.Name)
		}
	}

	pods := map[string]*harness.Pod{}
	for _, n := range site.Nodes {
		if err := n.WriteCNIConfig("10-bridge", n.BridgeConflist(nil)); err != nil {
			t.Fatal(err)
		}
		pod, err := n.CRI().RunPod(ctx, harness.PodSpec{Name: "web-" + n.Name})
		if err != nil {
			t.Fatalf("%s: %v\n%s", n.Name, err, n.Logs("containerd"))
		}
		if !n.PodCIDR.Contains(parseIP(t, pod.IP)) {
			t.Fatalf("%s: pod IP %s outside %s", n.Name, pod.IP, n.PodCIDR)
		}
		pods[n.Name] = pod
	}
	meshOK(t, ctx, pods)

	// The cloud link: reachable, cut, restored.
	node2 := site.Node(2)
	if _, err := node2.Exec(ctx, "busybox", "ping", "-c1", "-W2", harness.CloudIP); err != nil {
		t.Fatalf("node2 cannot reach the cloud before the cut: %v", err)
	}
	if err := node2.CutCloud(); err != nil {
		t.Fatal(err)
	}
	if _, err := node2.Exec(ctx, "busybox", "ping", "-c1", "-W1", harness.CloudIP); err == nil {
		t.Fatal("node2 reaches the cloud after CutCloud")
	}

	before, err := node2.NetState()
	if err != nil {
		t.Fatal(err)
	}
	for what, s := range map[string]string{"flannel.1 link": before.Links, "peer route": before.Routes, "cut rule": before.IPTables} {
		want := map[string]string{"flannel.1 link": "flannel.1", "peer route": "10.244.1.0/24", "cut rule": "HF-CLOUD-CUT"}[what]
		if !strings.Contains(s, want) {
			t.Fatalf("before reboot: %s missing (%q not in %q)", what, want, s)
		}
	}
	if !strings.Contains(before.FDB, site.Node(1).VTEPMAC.String()) || !strings.Contains(before.Neigh, "10.244.3.0") {
		t.Fatalf("before reboot: overlay FDB/neighbours missing:\n%s\n%s", before.FDB, before.Neigh)
	}
	if before.Processes == 0 {
		t.Fatal("before reboot: no process in node2's netns")
	}
	varMarker := filepath.Join(node2.VarDir, "kept")
	runMarker := filepath.Join(node2.RunDir, "wiped")
	os.WriteFile(varMarker, []byte("x"), 0o644)
	os.WriteFile(runMarker, []byte("x"), 0o644)
	bootID := node2.BootID()

	if err := node2.Reboot(nil); err != nil {
		t.Fatal(err)
	}
	after, err := node2.NetState()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(after.Links, "flannel.1") || strings.Contains(after.Links, "cni0") || strings.Count(after.Links, "\n") != 2 {
		t.Fatalf("after reboot node2 should have only lo and eth0:\n%s", after.Links)
	}
	if strings.Contains(after.Routes, "10.244.") || strings.Contains(after.FDB, "flannel") || after.Neigh != "" {
		t.Fatalf("after reboot overlay state survived:\nroutes %s\nfdb %s\nneigh %s", after.Routes, after.FDB, after.Neigh)
	}
	if strings.Contains(after.IPTables, "HF-CLOUD-CUT") {
		t.Fatal("after reboot node2's iptables rules survived")
	}
	if after.Processes != 0 {
		t.Fatalf("after reboot %d processes in node2's netns", after.Processes)
	}
	if _, err := os.Stat(varMarker); err != nil {
		t.Fatalf("reboot lost the var dir: %v", err)
	}
	if _, err := os.Stat(runMarker); err == nil {
		t.Fatal("reboot kept the run dir")
	}
	if node2.BootID() == bootID {
		t.Fatal("reboot kept the boot id")
	}
	// node1 and node3 never noticed.
	if err := harness.Ping(ctx, pods["node1"].NetNSPath, pods["node3"].IP); err != nil {
		t.Fatalf("node1 and node3 lost each other during node2's reboot: %v", err)
	}

	// Boot node2 by hand (holdfast not involved): overlay, containerd, a pod.
	if err := node2.ProgramOverlay(); err != nil {
		t.Fatal(err)
	}
	if err := node2.StartContainerd(); err != nil {
		t.Fatal(err)
	}
	pod, err := node2.CRI().RunPod(ctx, harness.PodSpec{Name: "web-node2-again"})
	if err != nil {
		t.Fatalf("%v\n%s", err, node2.Logs("containerd"))
	}
	pods["node2"] = pod
	meshOK(t, ctx, pods)

	site.Close()
	if left := site.Leftovers(); len(left) > 0 {
		t.Fatalf("site left behind: %v", left)
	}
	if after := hostState(t); after != hostBefore {
		t.Fatalf("the host's links, routes or iptables changed:\nbefore:\n%s\nafter:\n%s", hostBefore, after)
	}
}

func meshOK(t *testing.T, ctx context.Context, pods map[string]*harness.Pod) {
	t.Helper()
	for from, p := range pods {
		for to, q := range pods {
			if from == to {
				continue
			}
			if err := harness.Eventually(5*time.Second, func() error { return harness.Ping(ctx, p.NetNSPath, q.IP) }); err != nil {
				t.Fatalf("pod on %s -> pod on %s: %v", from, to, err)
			}
			// The pod's httpd may still be starting (seen with containerd 2.1).
			if err := harness.Eventually(5*time.Second, func() error { return harness.HTTP(ctx, p.NetNSPath, q.IP) }); err != nil {
				t.Fatalf("pod on %s -> pod on %s: %v", from, to, err)
			}
		}
	}
}
