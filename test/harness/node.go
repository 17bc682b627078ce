package harness

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Node is one node of a site (or the cloud).
type Node struct {
	Site           *Site
	Name           string // node1, node2, ... or cloud
	Index          int    // 1-based; 0 for the cloud
	NetNS          string // netns name, hf-<id>-<name>
	NSPath         string // /var/run/netns/<NetNS>
	UnderlayIP     net.IP
	UnderlayDev    string
	PodCIDR        *net.IPNet // nil for the cloud
	VTEPMAC        net.HardwareAddr
	CNIBinDir      string // containerd's CNI bin dir; empty: reference plugins
	Dir            string
	RunDir         string
	VarDir         string
	EtcDir         string
	LogDir         string
	CNIConfDir     string
	BootIDFile     string
	ContainerdSock string

	mu    sync.Mutex
	procs map[string]*Proc
}

// Proc is a background process started in a node.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Log  string
	done chan struct{} // closed when the process has exited
}

// Exec runs a command to completion inside the node's netns and returns its
// combined output.
func (n *Node) Exec(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.NSPath, "--", name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %w: %s", n.Name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MustExec is Exec that fails the test on error.
func (n *Node) MustExec(name string, args ...string) string {
	n.Site.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, name, args...)
	if err != nil {
		n.Site.t.Fatalf("%v", err)
	}
	return out
}

// Start starts a long-running process inside the node's netns. Its output
// goes to <node>/logs/<name>.log. Reboot and cleanup kill it.
func (n *Node) Start(name string, cmdName string, args ...string) (*Proc, error) {
	return n.StartEnv(name, nil, cmdName, args...)
}

// StartEnv is Start with the process's environment (nil: this process's).
func (n *Node) StartEnv(name string, env []string, cmdName string, args ...string) (*Proc, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p, ok := n.procs[name]; ok {
		select {
		case <-p.done:
		default:
			return nil, fmt.Errorf("%s: process %q already running", n.Name, name)
		}
	}
	logPath := filepath.Join(n.LogDir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "=== %s start %s %s\n", time.Now().Format(time.RFC3339Nano), cmdName, strings.Join(args, " "))
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.NSPath, "--", cmdName}, args...)...)
	cmd.Stdout, cmd.Stderr, cmd.Env = logf, logf, env
	// No Pdeathsig: it fires when the starting OS thread exits, which Go
	// does for goroutines that end while locked to a thread (netns code).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("%s: start %s: %w", n.Name, name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait() // reaps it; how it exited is in its log
		logf.Close()
		close(p.done)
	}()
	n.procs[name] = p
	return p, nil
}

// Kill SIGKILLs one process started with Start and waits for it.
func (n *Node) Kill(name string) {
	n.mu.Lock()
	p := n.procs[name]
	n.mu.Unlock()
	if p == nil {
		return
	}
	syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Pid is the process id of a running process started with Start (nsenter
// and unshare exec the command, so it is the command's own).
func (n *Node) Pid(name string) (int, error) {
	n.mu.Lock()
	p := n.procs[name]
	n.mu.Unlock()
	if p == nil {
		return 0, fmt.Errorf("%s: no process %q started", n.Name, name)
	}
	select {
	case <-p.done:
		return 0, fmt.Errorf("%s: process %q has exited:\n%s", n.Name, name, Tail(n.Logs(name), 2000))
	default:
	}
	return p.Cmd.Process.Pid, nil
}

// Stop sends SIGTERM to a process started with Start and waits up to
// timeout before killing it.
func (n *Node) Stop(name string, timeout time.Duration) {
	n.mu.Lock()
	p := n.procs[name]
	n.mu.Unlock()
	if p == nil {
		return
	}
	syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		n.Kill(name)
	}
}

// KillAll kills every process of the node: those started with Start,
// containerd and its shims, and every process (containers included) living
// in the node's netns or in one of its pods' netns.
func (n *Node) KillAll() error {
	n.stopProcs()
	return killProcesses(append([]string{n.NSPath}, podNetnsUnder(n.Dir)...), n.Dir)
}

func (n *Node) stopProcs() {
	n.mu.Lock()
	names := make([]string, 0, len(n.procs))
	for name := range n.procs {
		names = append(names, name)
	}
	n.mu.Unlock()
	for _, name := range names {
		n.Kill(name)
	}
}

// Logs returns the log of a process started with Start (for failure output).
func (n *Node) Logs(name string) string {
	data, _ := os.ReadFile(filepath.Join(n.LogDir, name+".log"))
	return string(data)
}

// killProcesses SIGKILLs every process whose netns is one of nsPaths, or
// whose command line mentions dir (containerd, shims, daemons), and waits
// until they are gone.
func killProcesses(nsPaths []string, dir string) error {
	inodes := map[uint64]bool{}
	for _, p := range nsPaths {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil {
			inodes[st.Ino] = true
		}
	}
	var victims []int
	for i := 0; i < 20; i++ {
		victims = victims[:0]
		self := os.Getpid()
		procs, _ := os.ReadDir("/proc")
		for _, e := range procs {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self || pid == 1 {
				continue
			}
			if processMatches(pid, inodes, dir) {
				victims = append(victims, pid)
			}
		}
		if len(victims) == 0 {
			return nil
		}
		for _, pid := range victims {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("processes still alive after SIGKILL: %v", victims)
}

func processMatches(pid int, netnsInodes map[uint64]bool, dir string) bool {
	var st unix.Stat_t
	if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) == nil && netnsInodes[st.Ino] {
		return true
	}
	if dir == "" {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(cmdline) == 0 {
		return false
	}
	// Zombies and kernel threads have empty cmdlines; the match is on an
	// argument that is, or lies under, the site directory.
	for _, arg := range strings.Split(string(cmdline), "\x00") {
		if strings.Contains(arg, dir+"/") || arg == dir {
			return true
		}
	}
	return false
}

// podNetnsUnder lists the pod netns bind mounts containerd made under dir
// (netns_mounts_under_state_dir).
func podNetnsUnder(dir string) []string {
	var out []string
	for _, m := range mountsUnder(dir) {
		if strings.Contains(m, "/netns/") {
			out = append(out, m)
		}
	}
	return out
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder detaches every mount at or below dir.
func unmountUnder(dir string) {
	for i := 0; i < 5; i++ {
		mps := mountsUnder(dir)
		if len(mps) == 0 {
			return
		}
		for _, mp := range mps {
			unix.Unmount(mp, unix.MNT_DETACH)
		}
	}
}

// removeCgroups removes the (empty, after the kill) cgroup directories named
// with prefix under every cgroup v1 hierarchy and the unified one.
func removeCgroups(prefix string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, root := range roots {
		matches, _ := filepath.Glob(filepath.Join(root, prefix+"*"))
		for _, m := range matches {
			removeCgroupTree(m)
		}
	}
}

func removeCgroupTree(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroupTree(filepath.Join(dir, e.Name()))
		}
	}
	syscall.Rmdir(dir)
}

var (
	signalOnce  sync.Once
	signalMu    sync.Mutex
	signalFuncs []func()
)

// onSignal runs f when the test binary gets SIGINT or SIGTERM, then exits:
// `go test` killed with Ctrl-C still cleans up.
func onSignal(f func()) {
	signalMu.Lock()
	signalFuncs = append(signalFuncs, f)
	signalMu.Unlock()
	signalOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		go func() {
			sig := <-ch
			signalMu.Lock()
			fs := append([]func(){}, signalFuncs...)
			signalMu.Unlock()
			for _, f := range fs {
				f()
			}
			fmt.Fprintf(os.Stderr, "harness: cleaned up after %v\n", sig)
			os.Exit(130)
		}()
	})
}
