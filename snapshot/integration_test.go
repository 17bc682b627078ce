package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/holdfast-edge/holdfast/internal/statefile"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/snapshot"
	"github.com/holdfast-edge/holdfast/test/harness"
)

// holdfastd is the holdfastd binary as shipped (harness.Binaries).
func holdfastd(t *testing.T) string {
	t.Helper()
	return filepath.Join(harness.Binaries(t), "holdfastd")
}

// pod is a static "pod": a netns with eth0 on the node's cni0 bridge.
type pod struct {
	node   *harness.Node
	name   string
	ip     string
	nsPath string
}

func podName(n *harness.Node, i int) string { return fmt.Sprintf("%s-p%d", n.NetNS, i) }

func addBridge(t *testing.T, n *harness.Node) {
	t.Helper()
	n.MustExec("ip", "link", "add", "cni0", "type", "bridge")
	n.MustExec("ip", "addr", "add", n.PodGateway().String()+"/24", "dev", "cni0")
	n.MustExec("ip", "link", "set", "cni0", "up")
}

// addPod creates pod i of node n with IP <subnet>.(10+i).
func addPod(t *testing.T, n *harness.Node, i int) *pod {
	t.Helper()
	p := &pod{node: n, name: podName(n, i), ip: fmt.Sprintf("%s%d", strings.TrimSuffix(n.PodCIDR.IP.String(), "0"), 10+i)}
	p.nsPath = "/var/run/netns/" + p.name
	run(t, "ip", "netns", "add", p.name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", p.name).Run() })
	host := fmt.Sprintf("hf-v%d", i)
	run(t, "ip", "-n", p.name, "link", "add", "eth0", "type", "veth", "peer", "name", host, "netns", n.NSPath)
	run(t, "ip", "-n", p.name, "link", "set", "lo", "up")
	run(t, "ip", "-n", p.name, "link", "set", "eth0", "mtu", "1450", "up")
	run(t, "ip", "-n", p.name, "addr", "add", p.ip+"/24", "dev", "eth0")
	run(t, "ip", "-n", p.name, "route", "add", "default", "via", n.PodGateway().String())
	n.MustExec("ip", "link", "set", host, "master", "cni0", "up")
	return p
}

func delPod(p *pod) { exec.Command("ip", "netns", "del", p.name).Run() }

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// node2Mesh fails the test unless every pod of node2 reaches every pod of
// node1 and node3, and back.
func node2Mesh(t *testing.T, ctx context.Context, pods map[string][]*pod, stage string) {
	t.Helper()
	for _, a := range pods["node2"] {
		for _, peer := range []string{"node1", "node3"} {
			for _, b := range pods[peer] {
				if err := reach(ctx, a, b.ip); err != nil {
					t.Fatalf("%s: node2 pod %s → %s pod %s: %v", stage, a.ip, peer, b.ip, err)
				}
				if err := reach(ctx, b, a.ip); err != nil {
					t.Fatalf("%s: %s pod %s → node2 pod %s: %v", stage, peer, b.ip, a.ip, err)
				}
			}
		}
	}
}

func reach(ctx context.Context, from *pod, to string) error {
	return harness.Eventually(10*time.Second, func() error { return harness.Ping(ctx, from.nsPath, to) })
}

// peerView is what a peer holds for the overlay: FDB and neighbours.
func peerView(t *testing.T, n *harness.Node) string {
	return n.MustExec("bridge", "fdb", "show", "dev", "flannel.1") + n.MustExec("ip", "neigh", "show", "dev", "flannel.1", "nud", "permanent")
}

// holdfastdIn runs holdfastd in node n and returns output and exit code.
func holdfastdIn(t *testing.T, n *harness.Node, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.NSPath, "--", holdfastd(t)}, args...)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("holdfastd %v: %v", args, err)
	}
	return string(out), 0
}

// kubeRules is a kube-proxy-like service 10.96.0.10 → node1's first pod.
const kubeRules = `*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-HF - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.10/32 -j KUBE-SVC-HF
-A KUBE-SVC-HF -j DNAT --to-destination 10.244.1.11
COMMIT
`

func TestOfflineRebootRestore(t *testing.T) {
	harness.RequireRoot(t)
	bin := holdfastd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	site := harness.NewSite(t, 3)
	site.Overlay()
	pods := map[string][]*pod{}
	for _, n := range site.Nodes {
		addBridge(t, n)
		pods[n.Name] = []*pod{addPod(t, n, 1), addPod(t, n, 2)}
	}
	n1, n2, n3 := site.Node(1), site.Node(2), site.Node(3)
	cmd := exec.Command("nsenter", "--net="+n2.NSPath, "iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(kubeRules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kube rules: %v: %s", err, out)
	}
	mesh := func(stage string) {
		t.Helper()
		node2Mesh(t, ctx, pods, stage)
		// The kube-proxy-like rule sends the service IP to node1's pod.
		if err := reach(ctx, pods["node2"][0], "10.96.0.10"); err != nil {
			t.Fatalf("%s: service 10.96.0.10 from node2 pod: %v", stage, err)
		}
	}
	mesh("before reboot")
	view1, view3 := peerView(t, n1), peerView(t, n3)
	mac2 := n2.VTEPMAC.String()

	dir := filepath.Join(n2.VarDir, "snapshot")
	common := []string{"--dir", dir, "--node-name", "node2", "--subnet-env", n2.SubnetEnvPath()}
	if _, err := n2.Start("snapshot-watch", bin, append([]string{"snapshot", "watch", "--listen", "127.0.0.1:9641"}, common...)...); err != nil {
		t.Fatal(err)
	}
	if err := harness.Eventually(10*time.Second, func() error {
		s, err := snapshot.LoadFile(filepath.Join(dir, snapshot.CurrentFile))
		if err != nil {
			return err
		}
		if d := s.Device("flannel.1"); d == nil || len(d.Routes) != 2 || d.PinnedMAC != mac2 {
			return fmt.Errorf("snapshot not complete yet: %+v", s.Devices)
		}
		return nil
	}); err != nil {
		t.Fatalf("watch wrote no snapshot: %v\n%s", err, n2.Logs("snapshot-watch"))
	}

	// A route added by hand shows up within 2 s.
	n2.MustExec("ip", "route", "add", "10.250.0.0/24", "via", n3.VTEPAddr().String(), "dev", "flannel.1", "onlink")
	added := time.Now()
	if err := harness.Eventually(2*time.Second, func() error {
		s, err := snapshot.LoadFile(filepath.Join(dir, snapshot.CurrentFile))
		if err != nil {
			return err
		}
		for _, r := range s.Device("flannel.1").Routes {
			if r.Dst == "10.250.0.0/24" {
				return nil
			}
		}
		return errors.New("route not in snapshot")
	}); err != nil {
		t.Fatalf("hand-added route not captured within 2 s: %v\n%s", err, n2.Logs("snapshot-watch"))
	}
	t.Logf("hand-added route captured after %s", time.Since(added).Round(time.Millisecond))
	metrics := n2.MustExec("busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:9641/metrics")
	for _, m := range []string{"holdfast_snapshot_age_seconds", "holdfast_snapshot_entries", "holdfast_snapshot_writes_total", "holdfast_snapshot_errors_total 0"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %q", m)
		}
	}

	// Reboot node2 offline: its pods die with it.
	for _, p := range pods["node2"] {
		delPod(p)
	}
	if err := n2.Reboot(func() error {
		if err := n2.CutCloud(); err != nil {
			return err
		}
		if _, err := os.Stat(n2.SubnetEnvPath()); err == nil {
			return errors.New("subnet.env survived the reboot")
		}
		badInput(t, n2, dir)
		out, code := holdfastdIn(t, n2, append([]string{"snapshot", "restore"}, common...)...)
		t.Logf("restore:\n%s", out)
		if code != 0 {
			return fmt.Errorf("restore exit %d: %s", code, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !n2.CloudCut() {
		t.Fatal("cloud link not cut during the test")
	}
	link := n2.MustExec("ip", "-d", "link", "show", "flannel.1")
	if !strings.Contains(link, "link/ether "+mac2) {
		t.Fatalf("restored flannel.1 lacks the pinned MAC %s:\n%s", mac2, link)
	}
	if env, err := os.ReadFile(n2.SubnetEnvPath()); err != nil || !strings.Contains(string(env), "FLANNEL_SUBNET=10.244.2.1/24") {
		t.Fatalf("subnet.env not restored: %v %s", err, env)
	}
	addBridge(t, n2)
	pods["node2"] = []*pod{addPod(t, n2, 1), addPod(t, n2, 2)}
	mesh("after offline reboot and restore")
	if got := peerView(t, n1); got != view1 {
		t.Errorf("node1's FDB/neighbours changed:\nbefore %s\nafter  %s", view1, got)
	}
	if got := peerView(t, n3); got != view3 {
		t.Errorf("node3's FDB/neighbours changed:\nbefore %s\nafter  %s", view3, got)
	}

	// Restore twice: no change.
	before := n2.MustExec("ip", "-d", "link", "show", "flannel.1") + n2.MustExec("ip", "route") + n2.MustExec("bridge", "fdb", "show", "dev", "flannel.1") + n2.MustExec("iptables-save", "-t", "nat")
	out, code := holdfastdIn(t, n2, append([]string{"snapshot", "restore"}, common...)...)
	if code != 0 || !strings.Contains(out, "added 0, ") {
		t.Fatalf("second restore: exit %d:\n%s", code, out)
	}
	after := n2.MustExec("ip", "-d", "link", "show", "flannel.1") + n2.MustExec("ip", "route") + n2.MustExec("bridge", "fdb", "show", "dev", "flannel.1") + n2.MustExec("iptables-save", "-t", "nat")
	if stripCounters(before) != stripCounters(after) {
		t.Fatalf("second restore changed state:\n%s\n---\n%s", before, after)
	}
	if out, code := holdfastdIn(t, n2, append([]string{"snapshot", "diff"}, common...)...); code != 0 {
		t.Errorf("diff after restore: exit %d\n%s", code, out)
	}
	if out, code := holdfastdIn(t, n2, "snapshot", "show", "--dir", dir); code != 0 || !strings.Contains(out, "pinned MAC "+mac2) {
		t.Errorf("show: exit %d\n%s", code, out)
	}
}

func stripCounters(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, ":") {
			l = strings.Fields(l)[0]
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// badInput runs restore on broken copies of the snapshot in a freshly
// rebooted node: each is refused with exit 1 and a message, and changes
// nothing; an empty dir exits 2.
func badInput(t *testing.T, n *harness.Node, dir string) {
	t.Helper()
	good, err := os.ReadFile(filepath.Join(dir, snapshot.CurrentFile))
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), good...)
	i := strings.Index(string(flipped), "10.244.")
	flipped[i+3] ^= 0x04
	cases := []struct {
		name, node, want string
		data             []byte
	}{
		{"truncated", "node2", "not a holdfast state file", good[:len(good)/3]},
		{"flipped byte", "node2", "checksum mismatch", flipped},
		{"future version", "node2", "newer than this binary supports", mustReversion(t, good, snapshot.Version+1)},
		{"other node", "node1", "snapshot is of node \"node2\"", good},
	}
	for _, c := range cases {
		bad := t.TempDir()
		os.WriteFile(filepath.Join(bad, snapshot.CurrentFile), c.data, 0o600)
		out, code := holdfastdIn(t, n, "snapshot", "restore", "--dir", bad, "--node-name", c.node)
		if code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit %d, want 1 with %q:\n%s", c.name, code, c.want, out)
		}
		if l := n.MustExec("ip", "link", "show"); strings.Contains(l, "flannel.1") {
			t.Fatalf("%s: refused restore created flannel.1", c.name)
		}
		if _, err := os.Stat(n.SubnetEnvPath()); err == nil {
			t.Fatalf("%s: refused restore wrote subnet.env", c.name)
		}
	}
	if out, code := holdfastdIn(t, n, "snapshot", "restore", "--dir", t.TempDir(), "--node-name", "node2"); code != 2 {
		t.Errorf("empty dir: exit %d, want 2:\n%s", code, out)
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
