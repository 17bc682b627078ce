package snapshot_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/test/harness"
)

const flannelVersion = "v0.26.7"

// flanneld returns the cached flanneld binary, building it if missing.
func flanneld(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(harness.RepoRoot(), ".cache", "tools", "flannel")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	cmd := exec.Command("go", "install", "github.com/flannel-io/flannel@"+flannelVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Dir(bin))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build flanneld %s (needs the Go module proxy): %v\n%s", flannelVersion, err, out)
	}
	return bin
}

var subnetRE = regexp.MustCompile(`FLANNEL_SUBNET=([0-9.]+)/24`)

// flannelSubnet waits for the node's subnet.env and returns the gateway
// (FLANNEL_SUBNET's address, <subnet>.1).
func flannelSubnet(t *testing.T, n *harness.Node) string {
	t.Helper()
	var gw string
	if err := harness.Eventually(30*time.Second, func() error {
		b, err := os.ReadFile(n.SubnetEnvPath())
		if err != nil {
			return err
		}
		m := subnetRE.FindStringSubmatch(string(b))
		if m == nil {
			return fmt.Errorf("no FLANNEL_SUBNET in %q", b)
		}
		gw = m[1]
		return nil
	}); err != nil {
		t.Fatalf("%s: flanneld wrote no subnet.env: %v\n%s", n.Name, err, n.Logs("flanneld"))
	}
	return gw
}

// flannelPods makes a bridge on the flannel subnet and two pods .10, .11.
func flannelPods(t *testing.T, n *harness.Node, gw string) []*pod {
	t.Helper()
	n.MustExec("ip", "link", "add", "cni0", "type", "bridge")
	n.MustExec("ip", "addr", "add", gw+"/24", "dev", "cni0")
	n.MustExec("ip", "link", "set", "cni0", "up")
	base := strings.TrimSuffix(gw, "1")
	var ps []*pod
	for i := 0; i < 2; i++ {
		p := &pod{node: n, name: fmt.Sprintf("%s-f%d", n.NetNS, i), ip: fmt.Sprintf("%s%d", base, 10+i)}
		p.nsPath = "/var/run/netns/" + p.name
		run(t, "ip", "netns", "add", p.name)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", p.name).Run() })
		host := fmt.Sprintf("hf-f%d", i)
		run(t, "ip", "-n", p.name, "link", "add", "eth0", "type", "veth", "peer", "name", host, "netns", n.NSPath)
		run(t, "ip", "-n", p.name, "link", "set", "eth0", "mtu", "1450", "up")
		run(t, "ip", "-n", p.name, "addr", "add", p.ip+"/24", "dev", "eth0")
		run(t, "ip", "-n", p.name, "route", "add", "default", "via", gw)
		n.MustExec("ip", "link", "set", host, "master", "cni0", "up")
		ps = append(ps, p)
	}
	return ps
}

func vtepMAC(t *testing.T, n *harness.Node) string {
	out := n.MustExec("ip", "-o", "link", "show", "flannel.1")
	m := regexp.MustCompile(`link/ether ([0-9a-f:]{17})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s: no flannel.1 MAC in %q", n.Name, out)
	}
	return m[1]
}

// TestFlanneldKeepsRestoredDevice: real flanneld (etcd backend, etcd in the
// cloud netns) builds the overlay; node2 reboots offline and is restored by
// holdfast; then flanneld starts on node2 again, adopts the restored
// flannel.1 with its MAC, publishes that MAC in its lease, and peers' pods
// stay reachable.
func TestFlanneldKeepsRestoredDevice(t *testing.T) {
	harness.RequireRoot(t)
	holdfastd(t)
	flannel := flanneld(t)
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Fatal("etcd not found: install Debian's etcd-server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	site := harness.NewSite(t, 3, harness.WithCloud())
	cloud := site.Cloud
	ep := "http://" + harness.CloudIP + ":2379"
	if _, err := cloud.Start("etcd", "etcd", "--name", "hf", "--data-dir", filepath.Join(cloud.VarDir, "etcd"),
		"--listen-client-urls", ep, "--advertise-client-urls", ep,
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "hf=http://127.0.0.1:2380"); err != nil {
		t.Fatal(err)
	}
	cfg := `{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1}}`
	if err := harness.Eventually(30*time.Second, func() error {
		_, err := cloud.Exec(ctx, "env", "ETCDCTL_API=3", "etcdctl", "--endpoints", ep, "put", "/coreos.com/network/config", cfg)
		return err
	}); err != nil {
		t.Fatalf("etcd: %v\n%s", err, cloud.Logs("etcd"))
	}
	startFlannel := func(n *harness.Node) {
		t.Helper()
		if _, err := n.Start("flanneld", flannel, "--etcd-endpoints", ep, "--iface", n.UnderlayDev,
			"--subnet-file", n.SubnetEnvPath(), "--ip-masq=false"); err != nil {
			t.Fatal(err)
		}
	}
	// One node at a time: flanneld's etcd subnet manager exits ("failed to
	// acquire lease: subnet already exists") when two nodes starting
	// together pick the same free subnet (seen once under load).
	gws := map[string]string{}
	for _, n := range site.Nodes {
		startFlannel(n)
		gws[n.Name] = flannelSubnet(t, n)
	}
	pods := map[string][]*pod{}
	for _, n := range site.Nodes {
		pods[n.Name] = flannelPods(t, n, gws[n.Name])
	}
	n1, n2, n3 := site.Node(1), site.Node(2), site.Node(3)
	node2Mesh(t, ctx, pods, "flanneld overlay")
	mac2 := vtepMAC(t, n2)
	view1, view3 := peerView(t, n1), peerView(t, n3)

	dir := filepath.Join(n2.VarDir, "snapshot")
	common := []string{"--dir", dir, "--node-name", "node2", "--subnet-env", n2.SubnetEnvPath()}
	if out, code := holdfastdIn(t, n2, append([]string{"snapshot", "save"}, common...)...); code != 0 {
		t.Fatalf("save: exit %d\n%s", code, out)
	}

	for _, p := range pods["node2"] {
		delPod(p)
	}
	if err := n2.Reboot(func() error {
		if err := n2.CutCloud(); err != nil {
			return err
		}
		out, code := holdfastdIn(t, n2, append([]string{"snapshot", "restore"}, common...)...)
		t.Logf("restore:\n%s", out)
		if code != 0 {
			return fmt.Errorf("restore exit %d", code)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := vtepMAC(t, n2); got != mac2 {
		t.Fatalf("restored MAC %s, flanneld's was %s", got, mac2)
	}
	pods["node2"] = flannelPods(t, n2, flannelSubnet(t, n2))
	node2Mesh(t, ctx, pods, "offline after restore")

	// The cloud comes back; flanneld starts on the restored node.
	if err := n2.RestoreCloud(); err != nil {
		t.Fatal(err)
	}
	startFlannel(n2)
	if err := harness.Eventually(30*time.Second, func() error {
		if !strings.Contains(n2.Logs("flanneld"), "Wrote subnet file") {
			return fmt.Errorf("flanneld not ready")
		}
		return nil
	}); err != nil {
		t.Fatalf("flanneld on node2: %v\n%s", err, n2.Logs("flanneld"))
	}
	if logs := n2.Logs("flanneld"); strings.Contains(logs, "incompatible configuration") {
		t.Fatalf("flanneld recreated the device:\n%s", logs)
	}
	if got := vtepMAC(t, n2); got != mac2 {
		t.Fatalf("after flanneld start flannel.1 MAC is %s, want %s\n%s", got, mac2, n2.Logs("flanneld"))
	}
	leases, err := cloud.Exec(ctx, "env", "ETCDCTL_API=3", "etcdctl", "--endpoints", ep, "get", "--prefix", "/coreos.com/network/subnets")
	if err != nil {
		t.Fatal(err)
	}
	var lease2 string
	for _, l := range strings.Split(leases, "\n") {
		if strings.Contains(l, `"PublicIP":"`+n2.UnderlayIP.String()+`"`) {
			lease2 = l
		}
	}
	if !strings.Contains(lease2, `"VtepMAC":"`+mac2+`"`) {
		t.Fatalf("node2's lease does not publish MAC %s:\n%s", mac2, leases)
	}
	node2Mesh(t, ctx, pods, "after flanneld took over")
	if got := peerView(t, n1); got != view1 {
		t.Errorf("node1's FDB/neighbours changed:\n%s\n---\n%s", view1, got)
	}
	if got := peerView(t, n3); got != view3 {
		t.Errorf("node3's FDB/neighbours changed:\n%s\n---\n%s", view3, got)
	}
}
