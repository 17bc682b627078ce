package footprint

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/holdfast-edge/holdfast/dns/store"
	"github.com/holdfast-edge/holdfast/health"
	"github.com/holdfast-edge/holdfast/health/members"
	"github.com/holdfast-edge/holdfast/internal/daemon"
	"github.com/holdfast-edge/holdfast/test/harness"
	"github.com/holdfast-edge/holdfast/test/reboot"
)

// What the benchmark puts on the node (issue 18).
const (
	pods         = 50
	services     = 1000
	unitSize     = 10 // health members: the node and nine peers
	podNamespace = "footprint"
	svcNamespace = "footprint-svc"
	// defaultIdle is each idle window (HOLDFAST_FOOTPRINT_IDLE overrides it,
	// e.g. 30s while working on the benchmark itself).
	defaultIdle = 5 * time.Minute
	// settle is the pause between "everything is ready" and the start of
	// a window, so start-up work (pod status updates, first captures) is
	// not counted as idle cost.
	settle = 20 * time.Second
)

func idleWindow(b *testing.B) time.Duration {
	s := os.Getenv("HOLDFAST_FOOTPRINT_IDLE")
	if s == "" {
		return defaultIdle
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		b.Fatalf("HOLDFAST_FOOTPRINT_IDLE=%q: want a positive duration", s)
	}
	return d
}

// BenchmarkNodeFootprint: see the package doc. Metrics: holdfast-rss-MB
// and holdfast-pss-MB (all holdfast node processes, at the end of the
// window), holdfast-cpu-% (of one core, over the window), per process
// <name>-rss-MB, <name>-pss-MB, <name>-cpu-%, and kubelet-cpu-ratio
// (kubelet's CPU through the shim ÷ straight to containerd).
func BenchmarkNodeFootprint(b *testing.B) {
	kb, err := findBins()
	if err != nil {
		b.Fatal(err)
	}
	idle := idleWindow(b)
	bin, plugins := harness.Binaries(b), harness.PluginDir(b)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	b.Cleanup(cancel)
	site := harness.NewSite(b, 1, harness.WithCloud())
	node := reboot.Node{Node: site.Node(1), Bins: bin}
	node.CNIBinDir = plugins
	site.Overlay()

	cl, err := startCloud(ctx, site.Cloud, kb)
	if err != nil {
		b.Fatal(err)
	}
	cs, err := cl.client()
	if err != nil {
		b.Fatal(err)
	}
	if err := startNodeDaemon(node); err != nil {
		b.Fatal(err)
	}
	if err := node.WaitSnapshot(ctx); err != nil {
		b.Fatalf("%v\n--- holdfastd node log\n%s", err, harness.Tail(node.Logs(nodeDaemon), 2000))
	}
	if err := startKubelet(node.Node, kb.Kubelet, cl.kubeconfig, "unix://"+node.ShimSock()); err != nil {
		b.Fatal(err)
	}
	if err := waitNodeReady(ctx, cs, node.Name); err != nil {
		b.Fatalf("%v\n--- kubelet log (tail)\n%s", err, harness.Tail(node.Logs("kubelet"), 4000))
	}
	if err := setupObjects(ctx, cs); err != nil {
		b.Fatal(err)
	}
	if err := startAgent(ctx, cs, site.Cloud, node, cl.kubeconfig); err != nil {
		b.Fatal(err)
	}
	if err := createPods(ctx, cs, node.Name); err != nil {
		b.Fatal(err)
	}
	waitAll := func(what string) {
		if err := waitPods(ctx, cs); err != nil {
			b.Fatalf("%s: %v\n--- kubelet log (tail)\n%s\n--- cri-shim log (tail)\n%s", what, err, harness.Tail(node.Logs("kubelet"), 4000), harness.Tail(node.Logs(nodeDaemon), 2000))
		}
	}
	waitAll("pods through the shim")
	if err := waitDNS(node); err != nil {
		b.Fatalf("%v\n--- agent log (tail)\n%s", err, harness.Tail(node.Logs(agent), 2000))
	}
	if err := waitVerdicts(ctx, node); err != nil {
		b.Fatalf("%v\n--- agent log (tail)\n%s", err, harness.Tail(node.Logs(agent), 3000))
	}

	// Window 1: kubelet through the shim; every holdfast process measured.
	holdfast := []string{nodeDaemon, agent}
	w1, err := measure(node.Node, append(holdfast, "kubelet"), idle)
	if err != nil {
		b.Fatal(err)
	}
	var rss, pss uint64
	var cpu float64
	for _, name := range holdfast {
		// The figures are those of daemons past start-up (docs/footprint.md).
		if idle >= daemon.StartupSettle && !strings.Contains(node.Logs(name), "released the binary's start-up pages") {
			b.Errorf("%s did not release its start-up pages within the idle window of %s\n%s", name, idle, harness.Tail(node.Logs(name), 2000))
		}
		p := w1[name]
		rss, pss, cpu = rss+p.mem.RSS, pss+p.mem.PSS, cpu+p.cpuPct
		b.ReportMetric(mb(p.mem.RSS), name+"-rss-MB")
		b.ReportMetric(mb(p.mem.PSS), name+"-pss-MB")
		b.ReportMetric(mb(p.mem.Anon), name+"-anon-MB")
		b.ReportMetric(p.cpuPct, name+"-cpu-%")
		b.Logf("%-15s RSS %6.1f MB  PSS %6.1f MB  anon %6.1f MB  CPU %.3f %% of one core", name, mb(p.mem.RSS), mb(p.mem.PSS), mb(p.mem.Anon), p.cpuPct)
	}
	b.Logf("%-15s RSS %6.1f MB  PSS %6.1f MB  CPU %.3f %% of one core (idle %s)", "holdfast total", mb(rss), mb(pss), cpu, idle)
	b.Logf("%-15s RSS %6.1f MB  PSS %6.1f MB  CPU %.3f %% (through the shim)", "kubelet", mb(w1["kubelet"].mem.RSS), mb(w1["kubelet"].mem.PSS), w1["kubelet"].cpuPct)

	// Window 2: the same kubelet, pods and node, straight to containerd.
	node.Stop("kubelet", 30*time.Second)
	if err := startKubelet(node.Node, kb.Kubelet, cl.kubeconfig, "unix://"+node.ContainerdSock); err != nil {
		b.Fatal(err)
	}
	if err := waitNodeReady(ctx, cs, node.Name); err != nil {
		b.Fatalf("%v\n--- kubelet log (tail)\n%s", err, harness.Tail(node.Logs("kubelet"), 4000))
	}
	waitAll("pods straight to containerd")
	w2, err := measure(node.Node, []string{"kubelet"}, idle)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%-15s CPU %.3f %% (straight to containerd)", "kubelet", w2["kubelet"].cpuPct)

	b.ReportMetric(mb(rss), "holdfast-rss-MB")
	b.ReportMetric(mb(pss), "holdfast-pss-MB")
	b.ReportMetric(cpu, "holdfast-cpu-%")
	b.ReportMetric(w1["kubelet"].cpuPct, "kubelet-shim-cpu-%")
	b.ReportMetric(w2["kubelet"].cpuPct, "kubelet-direct-cpu-%")
	b.ReportMetric(w1["kubelet"].cpuPct/w2["kubelet"].cpuPct, "kubelet-cpu-ratio")
}

func mb(b uint64) float64 { return float64(b) / 1e6 }

// procCost is one process over a window.
type procCost struct {
	cpuPct float64 // CPU seconds per wall second, in % of one core
	mem    memory  // at the end of the window
}

// measure waits settle, then samples the named processes' CPU time over
// window and their memory at its end. A process that is gone fails the
// measurement.
func measure(n *harness.Node, names []string, window time.Duration) (map[string]procCost, error) {
	time.Sleep(settle)
	pids := map[string]int{}
	start := map[string]float64{}
	for _, name := range names {
		pid, err := n.Pid(name)
		if err != nil {
			return nil, err
		}
		pids[name] = pid
		if start[name], err = cpuSeconds(pid); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	t0 := time.Now()
	time.Sleep(window)
	el := time.Since(t0).Seconds()
	out := map[string]procCost{}
	for _, name := range names {
		end, err := cpuSeconds(pids[name])
		if err != nil {
			return nil, fmt.Errorf("%s (pid %d) exited during the window: %w\n%s", name, pids[name], err, harness.Tail(n.Logs(name), 2000))
		}
		m, err := readMemory(pids[name])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out[name] = procCost{cpuPct: 100 * (end - start[name]) / el, mem: m}
	}
	return out, nil
}

func waitNodeReady(ctx context.Context, cs kubernetes.Interface, name string) error {
	var last string
	err := harness.Eventually(3*time.Minute, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				last = fmt.Sprintf("%s: %s", c.Reason, c.Message)
				if c.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		return fmt.Errorf("node %s not Ready (%s)", name, last)
	})
	return err
}

// setupObjects makes the namespaces (each with the default ServiceAccount
// the admission plugin wants: there is no controller-manager) and the
// Services.
func setupObjects(ctx context.Context, cs kubernetes.Interface) error {
	for _, ns := range []string{podNamespace, svcNamespace, health.Namespace} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("namespace %s: %w", ns, err)
		}
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("service account %s/default: %w", ns, err)
		}
	}
	return parallel(services, 16, func(i int) error {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%04d", i)},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": fmt.Sprintf("app-%04d", i)},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		}
		_, err := cs.CoreV1().Services(svcNamespace).Create(ctx, svc, metav1.CreateOptions{})
		return err
	})
}

func createPods(ctx context.Context, cs kubernetes.Interface, nodeName string) error {
	no := false
	zero := int64(0)
	return parallel(pods, 8, func(i int) error {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%02d", i), Labels: map[string]string{"app": "footprint"}},
			Spec: corev1.PodSpec{
				NodeName: nodeName, AutomountServiceAccountToken: &no, TerminationGracePeriodSeconds: &zero,
				Containers: []corev1.Container{{Name: "c", Image: harness.BusyboxImage, ImagePullPolicy: corev1.PullNever,
					Command: []string{"/bin/sleep", "2147483647"}}},
			},
		}
		_, err := cs.CoreV1().Pods(podNamespace).Create(ctx, pod, metav1.CreateOptions{})
		return err
	})
}

// waitPods waits until every pod runs ready and none was restarted (the
// second kubelet adopts the first one's containers).
func waitPods(ctx context.Context, cs kubernetes.Interface) error {
	return harness.Eventually(8*time.Minute, func() error {
		l, err := cs.CoreV1().Pods(podNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		var notReady []string
		for _, p := range l.Items {
			ready := false
			for _, c := range p.Status.Conditions {
				ready = ready || (c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue)
			}
			for _, c := range p.Status.ContainerStatuses {
				if c.RestartCount > 0 {
					return fmt.Errorf("pod %s: container %s restarted %d times", p.Name, c.Name, c.RestartCount)
				}
			}
			if !ready {
				notReady = append(notReady, p.Name+"="+string(p.Status.Phase))
			}
		}
		if len(l.Items) != pods || len(notReady) > 0 {
			sort.Strings(notReady)
			return fmt.Errorf("%d pods, %d not ready: %s", len(l.Items), len(notReady), strings.Join(notReady, " "))
		}
		return nil
	})
}

// parallel runs f(0..n-1) on width goroutines; the first error wins.
func parallel(n, width int, f func(i int) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	idx := make(chan int)
	for w := 0; w < width; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				if err := f(i); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		idx <- i
	}
	close(idx)
	wg.Wait()
	close(errs)
	return <-errs
}

// nodeDaemon is the process name of `holdfastd node` (the CRI shim and the
// snapshot watcher), as holdfast-cri.service runs it.
const nodeDaemon = "holdfastd-node"

// startNodeDaemon writes the node's CNI chain, starts containerd and then
// `holdfastd node`, and waits for the shim's socket to answer.
func startNodeDaemon(n reboot.Node) error {
	if err := n.WriteCNIConfig("10-holdfast", n.Conflist()); err != nil {
		return err
	}
	if err := n.StartContainerd(); err != nil {
		return err
	}
	if _, err := n.Start(nodeDaemon, holdfastd(n), "node",
		"--listen", n.ShimSock(), "--runtime-endpoint", "unix://"+n.ContainerdSock,
		"--state-dir", n.CRIStateDir(), "--boot-id-file", n.BootIDFile, "--node-name", n.Name,
		"--snapshot-dir", n.SnapshotDir(), "--snapshot-subnet-env", n.SubnetEnvPath()); err != nil {
		return err
	}
	if err := harness.WaitCRI(n.ShimSock(), 30*time.Second); err != nil {
		return fmt.Errorf("holdfastd node: %w\n%s", err, harness.Tail(n.Logs(nodeDaemon), 2000))
	}
	return nil
}

func healthDir(n reboot.Node) string { return filepath.Join(n.VarDir, "holdfast", "health") }
func dnsDir(n reboot.Node) string    { return filepath.Join(n.VarDir, "holdfast", "dns") }
func holdfastd(n reboot.Node) string { return filepath.Join(n.Bins, "holdfastd") }

// keygen makes a health key at path and returns its public half.
func keygen(hd, path, name string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	out, err := exec.Command(hd, "health", "keygen", "--out", path, "--node-name", name).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("health keygen %s: %v: %s", name, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// agent is the process name of `holdfastd agent` (health and DNS), as the
// holdfast-agent DaemonSet runs it.
const agent = "holdfastd-agent"

// startAgent starts nine health peers in the cloud netns, each on an
// address of its own, with a members file (their Node objects carry their
// keys and addresses), and then the node's `holdfastd agent` as its
// DaemonSet runs it: health with its members from Node objects and its
// views written to Leases; the node DNS on clusterDNS with its
// Service/EndpointSlice informers and the verdicts of the health daemon
// beside it. The DNS upstream is a closed local port: nothing leaves the
// site.
func startAgent(ctx context.Context, cs kubernetes.Interface, cloudNode *harness.Node, node reboot.Node, kubeconfig string) error {
	hd := holdfastd(node)
	nodeKey := filepath.Join(healthDir(node), "node.key")
	pub, err := keygen(hd, nodeKey, node.Name)
	if err != nil {
		return err
	}
	list := []members.Member{{Name: node.Name, Address: node.UnderlayIP.String(), PublicKey: pub}}
	peerDir := filepath.Join(cloudNode.VarDir, "health-peers")
	for i := 1; i < unitSize; i++ {
		name, ip := fmt.Sprintf("peer%d", i), fmt.Sprintf("198.51.100.%d", 100+i)
		if _, err := cloudNode.Exec(ctx, "ip", "addr", "add", ip+"/24", "dev", cloudNode.UnderlayDev); err != nil {
			return err
		}
		p, err := keygen(hd, filepath.Join(peerDir, name, "node.key"), name)
		if err != nil {
			return err
		}
		list = append(list, members.Member{Name: name, Address: ip, PublicKey: p})
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{health.PublicKeyAnnotation: p}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("node %s: %w", name, err)
		}
	}
	// The peers run a copy of holdfastd: pages of the same file would be
	// shared with the node's daemons and lower their PSS.
	peerBin := filepath.Join(peerDir, "holdfastd")
	if err := copyFile(hd, peerBin); err != nil {
		return err
	}
	mf := filepath.Join(peerDir, "members.json")
	b, err := json.Marshal(list)
	if err != nil {
		return err
	}
	if err := os.WriteFile(mf, b, 0o644); err != nil {
		return err
	}
	for _, m := range list[1:] {
		if _, err := cloudNode.Start("health-"+m.Name, peerBin, "health", "run", "--node-name", m.Name,
			"--listen", fmt.Sprintf("%s:%d", m.Address, health.DefaultPort), "--members-file", mf,
			"--state-dir", filepath.Join(peerDir, m.Name), "--key-file", filepath.Join(peerDir, m.Name, "node.key")); err != nil {
			return err
		}
	}
	_, err = node.Start(agent, hd, "agent", "--node-name", node.Name,
		"--health-listen", fmt.Sprintf(":%d", health.DefaultPort), "--health-kubeconfig", kubeconfig,
		"--health-state-dir", healthDir(node), "--health-key-file", nodeKey,
		"--dns-listen", clusterDNS+":53", "--dns-interface", "holdfast-dns0",
		"--dns-kubeconfig", kubeconfig, "--dns-state-dir", dnsDir(node),
		"--dns-verdicts", fmt.Sprintf("http://127.0.0.1:%d/v1/verdicts", health.DefaultPort),
		"--dns-upstream", "127.0.0.1:5399")
	return err
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// waitDNS waits until the DNS snapshot on disk holds every Service.
func waitDNS(node reboot.Node) error {
	return harness.Eventually(3*time.Minute, func() error {
		s, err := store.LoadFile(filepath.Join(dnsDir(node), store.FileName))
		if err != nil {
			return err
		}
		n := 0
		for _, svc := range s.Services {
			if svc.Namespace == svcNamespace {
				n++
			}
		}
		if n != services {
			return fmt.Errorf("dns snapshot holds %d of %d Services", n, services)
		}
		return nil
	})
}

// waitVerdicts waits until the node's health daemon counts the whole unit
// and holds every other member alive.
func waitVerdicts(ctx context.Context, node reboot.Node) error {
	return harness.Eventually(2*time.Minute, func() error {
		body, err := harness.GetIn(ctx, node.NSPath, fmt.Sprintf("http://127.0.0.1:%d/v1/verdicts", health.DefaultPort))
		if err != nil {
			return err
		}
		var v struct {
			Members  int               `json:"members"`
			Verdicts map[string]string `json:"verdicts"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return fmt.Errorf("verdicts %s: %w", body, err)
		}
		alive := 0
		for _, s := range v.Verdicts {
			if s == "alive" {
				alive++
			}
		}
		if v.Members != unitSize || alive < unitSize-1 {
			return fmt.Errorf("health: %d members, %d alive: %s", v.Members, alive, body)
		}
		return nil
	})
}
