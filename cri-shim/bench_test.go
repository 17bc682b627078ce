package crishim_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	crishim "github.com/holdfast-edge/holdfast/cri-shim"
	"github.com/holdfast-edge/holdfast/cri-shim/record"
	"github.com/holdfast-edge/holdfast/cri-shim/relaunch"
	"github.com/holdfast-edge/holdfast/cri-shim/volumes"
	"github.com/holdfast-edge/holdfast/test/harness"
)

// latencies runs call b.N times and reports p50/p99 in microseconds.
func latencies(b *testing.B, call func() error) {
	b.Helper()
	ds := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := call(); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	b.ReportMetric(float64(ds[len(ds)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(ds[len(ds)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkProxy: CRI calls through the shim (holdfast) vs straight to
// containerd, same node, same run. 25 pods × 2 containers = 50 containers.
func BenchmarkProxy(b *testing.B) {
	site := harness.NewSite(b, 1, harness.WithContainerd())
	node := site.Node(1)
	if err := node.WriteCNIConfig("10-bridge", node.BridgeConflist(nil)); err != nil {
		b.Fatal(err)
	}
	// The shim runs as its own process (holdfastd cri), as in production.
	sock := filepath.Join(node.RunDir, "holdfast", "cri.sock")
	shim, err := node.Start("holdfastd-cri", filepath.Join(harness.Binaries(b), "holdfastd"), "cri", "run", "--listen", sock,
		"--runtime-endpoint", "unix://"+node.ContainerdSock, "--state-dir", filepath.Join(node.VarDir, "holdfast", "cri"),
		"--boot-id-file", node.BootIDFile, "--metrics-addr", "")
	if err != nil {
		b.Fatal(err)
	}
	if err := harness.WaitCRI(sock, 30*time.Second); err != nil {
		b.Fatal(err)
	}
	// The floor for any relay process: a raw byte pump (this test binary
	// started again) between the same client and the same containerd.
	pump := filepath.Join(node.RunDir, "bytepump.sock")
	pumpProc, err := node.StartEnv("bytepump", append(os.Environ(), bytePumpEnv+"="+pump+"="+node.ContainerdSock), os.Args[0])
	if err != nil {
		b.Fatal(err)
	}
	if err := harness.WaitCRI(pump, 30*time.Second); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	clients := map[string]*harness.CRI{"holdfast": node.CRI(sock), "containerd": node.CRI(), "bytepump": node.CRI(pump)}
	vias := []string{"holdfast", "containerd", "bytepump"}
	var sandbox string
	for i := 0; i < 25; i++ {
		p, err := clients["holdfast"].RunPod(ctx, harness.PodSpec{Name: fmt.Sprintf("bench-%d", i),
			Containers: []harness.ContainerSpec{{Name: "a", Command: []string{"sleep", "100000"}}, {Name: "b", Command: []string{"sleep", "100000"}}}})
		if err != nil {
			b.Fatal(err)
		}
		sandbox = p.SandboxID
	}
	calls := map[string]func(c *harness.CRI) error{
		"Version": func(c *harness.CRI) error { _, err := c.Version(ctx); return err },
		"ListContainers": func(c *harness.CRI) error {
			r, err := c.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
			if err == nil && len(r.Containers) != 50 {
				err = fmt.Errorf("%d containers, want 50", len(r.Containers))
			}
			return err
		},
		"PodSandboxStatus": func(c *harness.CRI) error {
			_, err := c.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sandbox})
			return err
		},
	}
	for _, m := range []string{"Version", "ListContainers", "PodSandboxStatus"} {
		for _, via := range vias {
			b.Run(m+"/"+via, func(b *testing.B) {
				relay := map[string]*harness.Proc{"holdfast": shim, "bytepump": pumpProc}[via]
				var before taskCost
				if relay != nil {
					before = readTaskCost(b, relay.Cmd.Process.Pid)
				}
				latencies(b, func() error { return calls[m](clients[via]) })
				if relay != nil {
					d := readTaskCost(b, relay.Cmd.Process.Pid).minus(before)
					b.ReportMetric(float64(d.cpu.Nanoseconds())/1e3/float64(b.N), "relay-cpu-µs/op")
					b.ReportMetric(float64(d.switches)/float64(b.N), "relay-ctxsw/op")
				}
			})
		}
		// The same calls interleaved call by call, so all see the same
		// load on a shared machine; reports every p50 and the ratios to
		// containerd.
		b.Run(m+"/interleaved", func(b *testing.B) {
			ds := map[string][]time.Duration{}
			for i := 0; i < b.N; i++ {
				for _, via := range vias {
					start := time.Now()
					if err := calls[m](clients[via]); err != nil {
						b.Fatal(err)
					}
					ds[via] = append(ds[via], time.Since(start))
				}
			}
			p := func(ds []time.Duration, q int) float64 {
				sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
				return float64(ds[len(ds)*q/100].Nanoseconds()) / 1e3
			}
			for _, via := range vias {
				b.ReportMetric(p(ds[via], 50), via+"-p50-µs")
				b.ReportMetric(p(ds[via], 99), via+"-p99-µs")
			}
			b.ReportMetric(p(ds["holdfast"], 50)/p(ds["containerd"], 50), "p50-ratio")
			b.ReportMetric(p(ds["bytepump"], 50)/p(ds["containerd"], 50), "bytepump-p50-ratio")
		})
	}
}

// taskCost is what a process's threads have used so far: CPU time and
// context switches (voluntary: a thread went to sleep, waiting; the rest:
// preempted), summed over /proc/<pid>/task/*. It tells apart a relay that
// costs CPU per call from one that costs wakeups.
type taskCost struct {
	cpu      time.Duration
	switches int64
}

func (a taskCost) minus(b taskCost) taskCost {
	return taskCost{a.cpu - b.cpu, a.switches - b.switches}
}

func readTaskCost(b *testing.B, pid int) taskCost {
	b.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if err != nil || len(tasks) == 0 {
		b.Fatalf("tasks of %d: %v", pid, err)
	}
	var c taskCost
	for _, t := range tasks {
		// schedstat: time on CPU (ns), time waiting for a CPU, timeslices.
		var ns int64
		if s, err := os.ReadFile(filepath.Join(t, "schedstat")); err == nil {
			fmt.Sscan(string(s), &ns)
		}
		c.cpu += time.Duration(ns)
		st, err := os.ReadFile(filepath.Join(t, "status"))
		if err != nil {
			continue // the thread exited
		}
		for _, l := range strings.Split(string(st), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				c.switches += n
			}
		}
	}
	return c
}

// BenchmarkRelaunch: relaunching N recorded pods (holdfast: plan + records
// + RunPodSandbox/Create/Start, parallelism 4) vs the floor (the same
// RunPodSandbox/Create/Start straight to containerd, parallelism 4), same run.
func BenchmarkRelaunch(b *testing.B) {
	node := bridgeNode(b)
	ctx := context.Background()
	direct := node.CRI()
	for _, n := range []int{10, 50} {
		state := b.TempDir()
		shim := startShim(b, node, state, nil)
		via := node.CRI(shim.Sock)
		for i := 0; i < n; i++ {
			if _, err := via.RunPod(ctx, harness.PodSpec{Name: fmt.Sprintf("r%d-%d", n, i),
				Containers: []harness.ContainerSpec{{Name: "app", Command: []string{"sleep", "100000"}}}}); err != nil {
				b.Fatal(err)
			}
		}
		shim.Stop(b)
		store, bad, err := record.Open(state)
		if err != nil || len(bad) > 0 {
			b.Fatal(err, bad)
		}
		clearSandboxes(b, direct)
		boot := 0
		b.Run(fmt.Sprintf("holdfast/pods=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				boot++
				r := &relaunch.Runner{Runtime: direct.RuntimeServiceClient, Images: direct.ImageServiceClient, Store: store,
					BootID: fmt.Sprintf("bench-boot-%d", boot), Parallelism: 4,
					BackoffBase: relaunch.DefaultBackoffBase, BackoffMax: relaunch.DefaultBackoffMax, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
				b.StartTimer()
				todo, _ := relaunch.Plan(store.List(), r.BootID)
				res := r.Run(ctx, todo)
				b.StopTimer()
				if len(todo) != n {
					b.Fatalf("planned %d pods, want %d", len(todo), n)
				}
				for _, x := range res {
					if x.Err != nil {
						b.Fatal(x.Err)
					}
				}
				clearSandboxes(b, direct)
			}
		})
		attempt := uint32(1000)
		b.Run(fmt.Sprintf("containerd/pods=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				attempt++
				reqs := floorRequests(b, store.List(), attempt)
				b.StartTimer()
				runFloor(b, direct, reqs, 4)
				b.StopTimer()
				clearSandboxes(b, direct)
			}
		})
	}
}

type floorPod struct {
	sb  *runtimeapi.RunPodSandboxRequest
	ctr []*runtimeapi.CreateContainerRequest
}

func floorRequests(b *testing.B, pods []*record.Pod, attempt uint32) []floorPod {
	var out []floorPod
	for _, p := range pods {
		sb, err := p.SandboxRequest()
		if err != nil {
			b.Fatal(err)
		}
		sb.Config.Metadata.Attempt = attempt
		fp := floorPod{sb: sb}
		for _, c := range p.Ordered() {
			req, err := c.ContainerRequest()
			if err != nil {
				b.Fatal(err)
			}
			req.Config.Metadata.Attempt = attempt
			req.SandboxConfig = sb.Config
			fp.ctr = append(fp.ctr, req)
		}
		out = append(out, fp)
	}
	return out
}

func runFloor(b *testing.B, c *harness.CRI, pods []floorPod, par int) {
	ctx := context.Background()
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	errs := make(chan error, len(pods))
	for _, p := range pods {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sb, err := c.RunPodSandbox(ctx, p.sb)
			if err != nil {
				errs <- err
				return
			}
			for _, req := range p.ctr {
				req.PodSandboxId = sb.PodSandboxId
				cr, err := c.CreateContainer(ctx, req)
				if err != nil {
					errs <- err
					return
				}
				if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// clearSandboxes removes every sandbox straight in containerd (records untouched).
func clearSandboxes(b *testing.B, c *harness.CRI) {
	ctx := context.Background()
	resp, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		b.Fatal(err)
	}
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, s := range resp.Items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := c.RemovePod(ctx, s.Id); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
}

// BenchmarkRelaunchVolumes: relaunching N pods that each mount two Secret
// volumes and the projected service-account token, with their volumes
// restored before each relaunch (holdfast) against the same pods relaunched
// without restore (norestore), same run. Before every relaunch the volumes'
// tmpfs mounts are unmounted, as a reboot wipes them. ms/pod is the wall
// time per pod (parallelism 4); restore-ms/pod is the time spent in the
// restore step itself, per pod.
func BenchmarkRelaunchVolumes(b *testing.B) {
	node := bridgeNode(b)
	ctx := context.Background()
	direct := node.CRI()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, n := range []int{10, 50} {
		state := b.TempDir()
		shim := startShim(b, node, state, nil)
		via := node.CRI(shim.Sock)
		var paths []string
		for i := 0; i < n; i++ {
			uid := fmt.Sprintf("bench-vol-%d-%d-%d", n, i, time.Now().UnixNano())
			vols := filepath.Join(node.VarDir, "kubelet", "pods", uid, "volumes")
			var mounts []*runtimeapi.Mount
			for _, v := range []struct{ dir, key string }{{"kubernetes.io~secret/tls", "tls.key"}, {"kubernetes.io~secret/creds", "password"}, {"kubernetes.io~projected/kube-api-access-b1", "token"}} {
				dir := filepath.Join(vols, filepath.FromSlash(v.dir))
				benchVolume(b, dir, v.key)
				paths = append(paths, dir)
				mounts = append(mounts, &runtimeapi.Mount{HostPath: dir, ContainerPath: "/v/" + filepath.Base(dir), Readonly: true})
			}
			if _, err := via.RunPod(ctx, harness.PodSpec{Name: fmt.Sprintf("rv%d-%d", n, i), UID: uid,
				Containers: []harness.ContainerSpec{{Name: "app", Command: []string{"sleep", "100000"}, Mounts: mounts}}}); err != nil {
				b.Fatal(err)
			}
		}
		if err := harness.Eventually(60*time.Second, func() error {
			files, _, err := volumes.InspectStore(filepath.Join(state, volumes.DirName)).Load()
			got := 0
			for _, f := range files {
				got += len(f.Volumes)
			}
			if err != nil || got != 3*n {
				return fmt.Errorf("%d volumes captured, want %d (%v)", got, 3*n, err)
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		shim.Stop(b)
		store, bad, err := record.Open(state)
		if err != nil || len(bad) > 0 {
			b.Fatal(err, bad)
		}
		restore, err := crishim.VolumeRestore(state, store, log)
		if err != nil {
			b.Fatal(err)
		}
		wipe := func() {
			clearSandboxes(b, direct)
			for _, p := range paths {
				unix.Unmount(p, unix.MNT_DETACH)
			}
		}
		wipe()
		boot := 0
		for _, variant := range []string{"holdfast", "norestore"} {
			b.Run(fmt.Sprintf("%s/pods=%d/volumes=3", variant, n), func(b *testing.B) {
				var inRestore time.Duration
				var mu sync.Mutex
				var wall time.Duration
				for i := 0; i < b.N; i++ {
					boot++
					r := &relaunch.Runner{Runtime: direct.RuntimeServiceClient, Images: direct.ImageServiceClient, Store: store,
						BootID: fmt.Sprintf("bench-vol-boot-%d", boot), Parallelism: 4,
						BackoffBase: relaunch.DefaultBackoffBase, BackoffMax: relaunch.DefaultBackoffMax, Log: log}
					if variant == "holdfast" {
						r.Prepare = func(ctx context.Context, p *record.Pod) error {
							start := time.Now()
							err := restore(ctx, p)
							mu.Lock()
							inRestore += time.Since(start)
							mu.Unlock()
							return err
						}
					}
					start := time.Now()
					b.StartTimer()
					todo, _ := relaunch.Plan(store.List(), r.BootID)
					res := r.Run(ctx, todo)
					b.StopTimer()
					wall += time.Since(start)
					if len(todo) != n {
						b.Fatalf("planned %d pods, want %d", len(todo), n)
					}
					for _, x := range res {
						if x.Err != nil {
							b.Fatal(x.Err)
						}
					}
					if variant == "holdfast" {
						benchCheckRestored(b, paths)
					}
					wipe()
				}
				b.ReportMetric(float64(wall.Nanoseconds())/1e6/float64(b.N*n), "ms/pod")
				b.ReportMetric(float64(inRestore.Nanoseconds())/1e6/float64(b.N*n), "restore-ms/pod")
			})
		}
		wipe()
	}
}

// benchVolume mounts a tmpfs at dir holding one key in kubelet's layout.
func benchVolume(b *testing.B, dir, key string) {
	b.Helper()
	const ts = "..2026_12_02_13_00_00.000000001"
	if err := os.MkdirAll(filepath.Join(dir), 0o750); err != nil {
		b.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1024k"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	steps := []error{
		os.Mkdir(filepath.Join(dir, ts), 0o755),
		os.WriteFile(filepath.Join(dir, ts, key), bytes.Repeat([]byte("k"), 1200), 0o644),
		os.Symlink(ts, filepath.Join(dir, "..data")),
		os.Symlink("..data/"+key, filepath.Join(dir, key)),
	}
	for _, err := range steps {
		if err != nil {
			b.Fatal(err)
		}
	}
}

func benchCheckRestored(b *testing.B, paths []string) {
	b.Helper()
	mt, err := volumes.ReadMounts(volumes.MountInfo)
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range paths {
		if _, ok := mt.Tmpfs(p); !ok {
			b.Fatalf("%s not restored", p)
		}
		if _, err := os.Stat(filepath.Join(p, "..data")); err != nil {
			b.Fatalf("%s restored without content: %v", p, err)
		}
	}
}

// bridgeNode is one harness node with containerd and a bridge network.
func bridgeNode(b *testing.B) *harness.Node {
	node := harness.NewSite(b, 1, harness.WithContainerd()).Node(1)
	if err := node.WriteCNIConfig("10-bridge", node.BridgeConflist(nil)); err != nil {
		b.Fatal(err)
	}
	return node
}
