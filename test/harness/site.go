package harness

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/stablemac"
)

const (
	// Prefix starts the name of every namespace the harness creates.
	Prefix = "hf-"
	// CloudIP is the cloud control plane's address on the site LAN.
	CloudIP = "198.51.100.1"
	// LANPrefixLen is the prefix length of the site LAN.
	LANPrefixLen = 24
	// ClusterCIDR holds every pod subnet.
	ClusterCIDR = "10.244.0.0/16"
	// ownerDir records which process owns which site, for the sweep.
	ownerDir = "/run/hf-harness"
	netnsDir = "/var/run/netns"
)

// Site is one edge site: a LAN and its nodes.
type Site struct {
	t     testing.TB
	ID    string
	Dir   string
	LAN   string // netns name of the LAN
	Nodes []*Node
	Cloud *Node // non-nil with WithCloud
	opts  options
	// Keep leaves the site running at Close (for exploring by hand); the
	// next NewSite's sweep removes it once this process has exited.
	Keep    bool
	cleanMu sync.Mutex
	cleaned bool
}

// Option configures NewSite.
type Option func(*options)

type options struct {
	containerd bool
	cloud      bool
}

// WithContainerd starts a containerd in every node (and imports the test
// images into it).
func WithContainerd() Option { return func(o *options) { o.containerd = true } }

// WithCloud adds a "cloud" namespace at CloudIP on the LAN, for etcd and the
// Kubernetes control plane.
func WithCloud() Option { return func(o *options) { o.cloud = true } }

type owner struct {
	PID int    `json:"pid"`
	Dir string `json:"dir"`
}

// NewSite creates a site of n nodes. It fails the test (never skips) when
// root, network namespaces or a required tool is missing.
func NewSite(t testing.TB, n int, opts ...Option) *Site {
	t.Helper()
	RequireRoot(t)
	requireTools(t, "ip", "nsenter", "iptables", "bridge", "sysctl")
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if n < 1 || n > 9 {
		t.Fatalf("harness: %d nodes: want 1..9", n)
	}
	Sweep(t.Logf)
	id := randomID()
	s := &Site{t: t, ID: id, LAN: Prefix + id + "-lan", opts: o}
	s.Dir = filepath.Join(os.TempDir(), Prefix+id)
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		t.Fatalf("harness: %v", err)
	}
	if err := writeOwner(id, owner{PID: os.Getpid(), Dir: s.Dir}); err != nil {
		t.Fatalf("harness: %v", err)
	}
	t.Cleanup(s.Close)
	onSignal(s.Close)

	if err := s.createLAN(); err != nil {
		t.Fatalf("harness: create LAN: %v", err)
	}
	for i := 1; i <= n; i++ {
		node, err := s.addNode(fmt.Sprintf("node%d", i), i, fmt.Sprintf("198.51.100.%d", 10+i))
		if err != nil {
			t.Fatalf("harness: create node%d: %v", i, err)
		}
		s.Nodes = append(s.Nodes, node)
	}
	if o.cloud {
		cloud, err := s.addNode("cloud", 0, CloudIP)
		if err != nil {
			t.Fatalf("harness: create cloud: %v", err)
		}
		s.Cloud = cloud
	}
	if o.containerd {
		for _, node := range s.Nodes {
			if err := node.StartContainerd(); err != nil {
				t.Fatalf("harness: %v", err)
			}
		}
	}
	return s
}

// Node returns node i (1-based).
func (s *Site) Node(i int) *Node { return s.Nodes[i-1] }

func (s *Site) createLAN() error {
	if err := run("ip", "netns", "add", s.LAN); err != nil {
		return err
	}
	return runAll(
		[]string{"ip", "-n", s.LAN, "link", "set", "lo", "up"},
		[]string{"ip", "-n", s.LAN, "link", "add", "lan0", "type", "bridge"},
		[]string{"ip", "-n", s.LAN, "link", "set", "lan0", "up"},
	)
}

func (s *Site) addNode(name string, index int, underlay string) (*Node, error) {
	n := &Node{
		Site:        s,
		Name:        name,
		Index:       index,
		NetNS:       Prefix + s.ID + "-" + name,
		UnderlayIP:  net.ParseIP(underlay),
		UnderlayDev: "eth0",
		Dir:         filepath.Join(s.Dir, name),
		procs:       map[string]*Proc{},
	}
	n.NSPath = filepath.Join(netnsDir, n.NetNS)
	n.RunDir = filepath.Join(n.Dir, "run")
	n.VarDir = filepath.Join(n.Dir, "var")
	n.EtcDir = filepath.Join(n.Dir, "etc")
	n.LogDir = filepath.Join(n.Dir, "logs")
	n.CNIConfDir = filepath.Join(n.EtcDir, "cni", "net.d")
	n.BootIDFile = filepath.Join(n.Dir, "boot_id")
	n.ContainerdSock = filepath.Join(n.RunDir, "containerd", "containerd.sock")
	if index > 0 {
		_, n.PodCIDR, _ = net.ParseCIDR(fmt.Sprintf("10.244.%d.0/24", index))
	}
	for _, d := range []string{n.RunDir, n.VarDir, n.CNIConfDir, n.LogDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(n.BootIDFile, []byte(newUUID()+"\n"), 0o644); err != nil {
		return nil, err
	}
	return n, n.plug()
}

// plug creates the node netns with only its underlay link, as after boot.
func (n *Node) plug() error {
	s := n.Site
	if err := run("ip", "netns", "add", n.NetNS); err != nil {
		return err
	}
	lanEnd := "v-" + n.Name
	return runAll(
		[]string{"ip", "-n", n.NetNS, "link", "set", "lo", "up"},
		// A real NIC keeps its MAC across reboots; peers' ARP caches rely on it.
		[]string{"ip", "-n", s.LAN, "link", "add", lanEnd, "type", "veth", "peer", "name", n.UnderlayDev, "address", n.UnderlayMAC().String(), "netns", n.NetNS},
		[]string{"ip", "-n", s.LAN, "link", "set", lanEnd, "master", "lan0", "up"},
		[]string{"ip", "-n", n.NetNS, "addr", "add", fmt.Sprintf("%s/%d", n.UnderlayIP, LANPrefixLen), "dev", n.UnderlayDev},
		[]string{"ip", "-n", n.NetNS, "link", "set", n.UnderlayDev, "up"},
		[]string{"nsenter", "--net=" + n.NSPath, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
	)
}

// UnderlayMAC is the node's stable eth0 MAC.
func (n *Node) UnderlayMAC() net.HardwareAddr {
	return stablemac.FromName("harness-underlay", n.Site.ID, n.Name)
}

// Close tears the site down. It is idempotent and runs from t.Cleanup.
func (s *Site) Close() {
	s.cleanMu.Lock()
	defer s.cleanMu.Unlock()
	if s.cleaned {
		return
	}
	s.cleaned = true
	if s.Keep {
		s.t.Logf("harness: keeping site %s (netns %s*, dir %s); the next test run sweeps it", s.ID, Prefix+s.ID+"-", s.Dir)
		return
	}
	all := append([]*Node{}, s.Nodes...)
	if s.Cloud != nil {
		all = append(all, s.Cloud)
	}
	for _, n := range all {
		n.stopProcs()
	}
	teardown(s.ID, s.Dir, s.t.Logf)
}

// teardown removes everything of a site: processes, mounts, namespaces,
// cgroups and its directory.
func teardown(id, dir string, logf func(string, ...any)) {
	var nsPaths []string
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), Prefix+id+"-") {
			nsPaths = append(nsPaths, filepath.Join(netnsDir, e.Name()))
		}
	}
	if dir != "" {
		nsPaths = append(nsPaths, podNetnsUnder(dir)...)
	}
	if err := killProcesses(nsPaths, dir); err != nil {
		logf("harness: teardown %s: %v", id, err)
	}
	if dir != "" {
		unmountUnder(dir)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), Prefix+id+"-") {
			if err := run("ip", "netns", "del", e.Name()); err != nil {
				logf("harness: delete netns %s: %v", e.Name(), err)
			}
		}
	}
	removeCgroups(Prefix + id)
	if dir != "" {
		if err := os.RemoveAll(dir); err != nil {
			logf("harness: remove %s: %v", dir, err)
		}
	}
	os.Remove(filepath.Join(ownerDir, id+".json"))
}

// Sweep removes sites left by test processes that no longer run (killed
// before their cleanup). Sites of live processes are left alone, so tests
// in other packages can run at the same time.
func Sweep(logf func(string, ...any)) {
	ids := map[string]bool{}
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if id, ok := siteID(e.Name()); ok {
			ids[id] = true
		}
	}
	owners, _ := os.ReadDir(ownerDir)
	for _, e := range owners {
		if id, ok := siteID(Prefix + strings.TrimSuffix(e.Name(), ".json") + "-x"); ok {
			ids[id] = true
		}
	}
	for id := range ids {
		o, err := readOwner(id)
		if err == nil && processAlive(o.PID) {
			continue
		}
		dir := o.Dir
		if dir == "" {
			dir = filepath.Join(os.TempDir(), Prefix+id)
		}
		logf("harness: sweeping leftover site %s (%s)", id, dir)
		teardown(id, dir, logf)
	}
}

// siteID extracts the site id from a harness netns name, hf-<id>-<name>
// with id six lowercase hex digits. Other tests' hf- namespaces (hf-pod-…,
// hf-snap-…) are not sites: the sweep never touches them.
func siteID(nsName string) (string, bool) {
	rest, ok := strings.CutPrefix(nsName, Prefix)
	if !ok || len(rest) < 8 || rest[6] != '-' {
		return "", false
	}
	for _, c := range rest[:6] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", false
		}
	}
	return rest[:6], true
}

func writeOwner(id string, o owner) error {
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return err
	}
	data, _ := json.Marshal(o)
	return os.WriteFile(filepath.Join(ownerDir, id+".json"), data, 0o644)
}

func readOwner(id string) (owner, error) {
	var o owner
	data, err := os.ReadFile(filepath.Join(ownerDir, id+".json"))
	if err != nil {
		return o, err
	}
	return o, json.Unmarshal(data, &o)
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// RequireRoot fails the test, saying why, when not running as root or when
// network namespaces cannot be created.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this integration test needs root (network namespaces, containerd); run it as root, e.g. `sudo make test`")
	}
	probe := Prefix + "probe-" + randomID()
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		t.Fatalf("this integration test needs network namespaces, and `ip netns add` failed: %v: %s", err, out)
	}
	exec.Command("ip", "netns", "del", probe).Run()
}

func requireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("integration test needs %q on PATH (installed by `make deps`): %v", tool, err)
		}
	}
}

func randomID() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func runAll(cmds ...[]string) error {
	for _, c := range cmds {
		if err := run(c[0], c[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// waitFor polls cond until it returns nil or the timeout passes. On timeout
// it returns cond's last error, saying how long and how often it tried, so
// a failure on a busy machine shows what the wait last saw.
func waitFor(timeout time.Duration, cond func() error) error {
	start := time.Now()
	deadline := start.Add(timeout)
	for tries := 1; ; tries++ {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still failing after %v (%d tries), last: %w", time.Since(start).Round(time.Millisecond), tries, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
