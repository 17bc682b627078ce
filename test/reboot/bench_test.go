package reboot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// BenchmarkOfflineRecovery reboots a node with N pods offline and measures
// the time to all of its pods being reachable from a peer's pod (ICMP and
// TCP), from "containerd ready" (recovery-ms) and from reboot start
// (total-ms). holdfast: snapshot restore → containerd → CRI shim relaunch.
// floor: `ip -batch`/`bridge -batch` applying the same overlay entries →
// containerd → the same pods started straight through containerd with the
// same parallelism (4) and plain bridge+host-local.
func BenchmarkOfflineRecovery(b *testing.B) {
	for _, pods := range []int{10, 50} {
		b.Run(fmt.Sprintf("holdfast/pods=%d", pods), func(b *testing.B) { benchRecovery(b, pods, true) })
		b.Run(fmt.Sprintf("floor/pods=%d", pods), func(b *testing.B) { benchRecovery(b, pods, false) })
	}
}

func benchRecovery(b *testing.B, pods int, holdfast bool) {
	ctx := context.Background()
	site := harness.NewSite(b, 2, harness.WithCloud())
	plugins, bins := harness.PluginDir(b), harness.Binaries(b)
	peer, victim := Node{Node: site.Node(1), Bins: bins}, Node{Node: site.Node(2), Bins: bins}
	peer.CNIBinDir, victim.CNIBinDir = plugins, plugins
	site.Overlay()
	if err := peer.BringUp(ctx); err != nil {
		b.Fatal(err)
	}
	if holdfast {
		if err := victim.BringUp(ctx); err != nil {
			b.Fatal(err)
		}
		if err := victim.WaitSnapshot(ctx); err != nil {
			b.Fatal(err)
		}
	} else {
		if err := victim.WriteCNIConfig("10-bridge", victim.BridgeConflist(nil, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}})); err != nil {
			b.Fatal(err)
		}
		if err := victim.StartContainerd(); err != nil {
			b.Fatal(err)
		}
	}
	probe, err := peer.CRI(peer.ShimSock()).RunPod(ctx, harness.PodSpec{Name: "probe"})
	if err != nil {
		b.Fatal(err)
	}
	endpoint := victim.ContainerdSock
	if holdfast {
		endpoint = victim.ShimSock()
	}
	specs := make([]harness.PodSpec, pods)
	for i := range specs {
		specs[i] = harness.PodSpec{Name: fmt.Sprintf("bench-%d", i), Namespace: "bench"}
	}
	if _, err := runParallel(ctx, victim, endpoint, specs, 4); err != nil {
		b.Fatal(err)
	}
	batch := overlayBatch(site, victim.Node)

	var recovery, total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		var ready time.Time
		var ips []string
		err := victim.Reboot(func() error {
			if holdfast {
				if _, err := victim.Restore(ctx); err != nil {
					return err
				}
			} else if err := batch.apply(victim.Node); err != nil {
				return err
			}
			if err := victim.StartContainerd(); err != nil {
				return err
			}
			ready = time.Now()
			if holdfast {
				if err := victim.StartShim(); err != nil {
					return err
				}
				c := harness.DialCRIOrNil(victim.ShimSock())
				defer c.Close()
				var states []*podState
				for _, s := range specs {
					states = append(states, &podState{spec: s})
				}
				if err := waitRelaunched(ctx, c, withUIDs(ctx, c, states), NewTimeline(nil)); err != nil {
					return err
				}
				for _, s := range states {
					ip, _, _, err := podNet(ctx, c, s.spec.UID)
					if err != nil {
						return err
					}
					ips = append(ips, ip)
				}
				return nil
			}
			started, err := runParallel(ctx, victim, victim.ContainerdSock, specs, 4)
			ips = started
			return err
		})
		if err != nil {
			b.Fatalf("%v\n%s", err, tail(victim.Logs("cri-shim"), 2000))
		}
		if err := reachAll(ctx, probe.NetNSPath, ips); err != nil {
			b.Fatal(err)
		}
		done := time.Now()
		recovery += done.Sub(ready)
		total += done.Sub(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(recovery.Milliseconds())/float64(b.N), "recovery-ms")
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "total-ms")
}

// withUIDs fills in the UIDs the pods got when first run (the specs were
// run with generated UIDs), looked up by name through the shim.
func withUIDs(ctx context.Context, c *harness.CRI, states []*podState) []*podState {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := c.ListPodSandbox(ctx, nil)
		if err == nil {
			byName := map[string]string{}
			for _, sb := range resp.Items {
				byName[sb.Metadata.Name] = sb.Metadata.Uid
			}
			missing := 0
			for _, s := range states {
				if s.spec.UID = byName[s.spec.Name]; s.spec.UID == "" {
					missing++
				}
			}
			if missing == 0 {
				return states
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return states
}

// runParallel runs pods through endpoint with bounded parallelism and
// returns their IPs.
func runParallel(ctx context.Context, n Node, endpoint string, specs []harness.PodSpec, par int) ([]string, error) {
	c, err := harness.DialCRI(endpoint)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.CgroupParent = "/" + n.NetNS
	c.LogRoot = filepath.Join(n.VarDir, "log", "pods")
	ips := make([]string, len(specs))
	errs := make(chan error, len(specs))
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range specs {
		if specs[i].UID == "" {
			specs[i].UID = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			spec := specs[i]
			spec.UID = fmt.Sprintf("%s-%d", spec.UID[:24], time.Now().UnixNano()%1e12)
			pod, err := c.RunPod(ctx, spec)
			if err != nil {
				errs <- err
				return
			}
			ips[i] = pod.IP
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return nil, err
	}
	return ips, nil
}

func reachAll(ctx context.Context, from string, ips []string) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(ips))
	sem := make(chan struct{}, 8)
	for _, ip := range ips {
		wg.Add(1)
		sem <- struct{}{}
		go func(ip string) {
			defer func() { <-sem; wg.Done() }()
			errs <- harness.Eventually(20*time.Second, func() error {
				if err := harness.Ping(ctx, from, ip); err != nil {
					return err
				}
				return harness.HTTP(ctx, from, ip)
			})
		}(ip)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// ipBatch is the floor's overlay restore: the same entries holdfast
// restores, applied with one `ip -batch` and one `bridge -batch`.
type ipBatch struct{ ip, bridge string }

func overlayBatch(site *harness.Site, n *harness.Node) ipBatch {
	var ip, br strings.Builder
	fmt.Fprintf(&ip, "link add %s address %s type vxlan id %d local %s dev %s dstport %d nolearning\n",
		harness.VXLANDevice, n.VTEPMAC, harness.VXLANVNI, n.UnderlayIP, n.UnderlayDev, harness.VXLANPort)
	fmt.Fprintf(&ip, "link set %s mtu %d up\naddr add %s/32 dev %s\n", harness.VXLANDevice, harness.VXLANMTU, n.VTEPAddr(), harness.VXLANDevice)
	for _, p := range site.Nodes {
		if p == n {
			continue
		}
		fmt.Fprintf(&ip, "neigh replace %s lladdr %s dev %s nud permanent\n", p.VTEPAddr(), p.VTEPMAC, harness.VXLANDevice)
		fmt.Fprintf(&ip, "route replace %s via %s dev %s onlink\n", p.PodCIDR, p.VTEPAddr(), harness.VXLANDevice)
		fmt.Fprintf(&br, "fdb replace %s dev %s dst %s self permanent\n", p.VTEPMAC, harness.VXLANDevice, p.UnderlayIP)
	}
	return ipBatch{ip: ip.String(), bridge: br.String()}
}

func (b ipBatch) apply(n *harness.Node) error {
	dir, err := os.MkdirTemp("", "hf-batch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ipf, brf := filepath.Join(dir, "ip"), filepath.Join(dir, "bridge")
	os.WriteFile(ipf, []byte(b.ip), 0o644)
	os.WriteFile(brf, []byte(b.bridge), 0o644)
	ctx := context.Background()
	if _, err := n.Exec(ctx, "ip", "-batch", ipf); err != nil {
		return err
	}
	_, err = n.Exec(ctx, "bridge", "-batch", brf)
	return err
}
