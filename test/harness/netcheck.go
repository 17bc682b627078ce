package harness

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Ping sends one ICMP echo from inside netns (a path) to ip.
func Ping(ctx context.Context, netns, ip string) error {
	out, err := execCtx(ctx, "nsenter", "--net="+netns, "--", "busybox", "ping", "-c", "1", "-W", "2", ip)
	if err != nil {
		return fmt.Errorf("ping %s from %s: %w: %s", ip, netns, err, out)
	}
	return nil
}

// HTTP fetches the default container's page at ip:PodHTTPPort over TCP from
// inside netns (a path) and checks the body. The socket is created in netns
// (on a thread switched into it), then used from anywhere.
func HTTP(ctx context.Context, netns, ip string) error {
	addr := net.JoinHostPort(ip, strconv.Itoa(PodHTTPPort))
	var conn net.Conn
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		var err error
		d := net.Dialer{Timeout: 3 * time.Second}
		conn, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return fmt.Errorf("TCP %s from %s: %w", addr, netns, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", ip); err != nil {
		return fmt.Errorf("TCP %s from %s: %w", addr, netns, err)
	}
	resp, err := io.ReadAll(conn)
	if err != nil {
		return fmt.Errorf("TCP %s from %s: read: %w", addr, netns, err)
	}
	if !strings.HasPrefix(string(resp), "HTTP/1.") || !strings.HasSuffix(string(resp), PodPage) {
		return fmt.Errorf("TCP %s from %s: unexpected response %q", addr, netns, resp)
	}
	return nil
}

// Eventually retries f until it succeeds or timeout passes; on timeout its
// error says how long it tried and wraps f's last error. It is the one
// readiness wait of the tests: pods serving, daemons listening, state
// converged are polled with it, never assumed after a fixed sleep.
func Eventually(timeout time.Duration, f func() error) error { return waitFor(timeout, f) }

func execCtx(ctx context.Context, name string, args ...string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	cmd := commandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// NetState is what a node's kernel holds: read through netlink (ip,
// bridge) and iptables-save inside the node netns, never through sysfs.
type NetState struct {
	Links, Routes, FDB, Neigh, IPTables string
	Processes                           int
}

// NetState reads the node's links, routes, FDB, permanent neighbours,
// iptables rules and the number of processes in its netns.
func (n *Node) NetState() (NetState, error) {
	var st NetState
	var err error
	get := func(dst *string, name string, args ...string) {
		if err != nil {
			return
		}
		*dst, err = execOut(name, args...)
	}
	get(&st.Links, "ip", "-n", n.NetNS, "-o", "link", "show")
	get(&st.Routes, "ip", "-n", n.NetNS, "route", "show")
	get(&st.FDB, "bridge", "-n", n.NetNS, "fdb", "show")
	get(&st.Neigh, "ip", "-n", n.NetNS, "neigh", "show", "nud", "permanent")
	get(&st.IPTables, "nsenter", "--net="+n.NSPath, "--", "iptables-save")
	if err != nil {
		return st, fmt.Errorf("%s: read net state: %w", n.Name, err)
	}
	st.Processes = len(processesInNetns(n.NSPath))
	return st, nil
}

func processesInNetns(path string) []int {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return nil
	}
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var ps unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &ps) == nil && ps.Ino == st.Ino && ps.Dev == st.Dev {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Leftovers lists what of this site still exists on the machine: netns,
// mounts, processes, cgroups. Empty after Close.
func (s *Site) Leftovers() []string {
	var out []string
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), Prefix+s.ID+"-") {
			out = append(out, "netns "+e.Name())
		}
	}
	for _, m := range mountsUnder(s.Dir) {
		out = append(out, "mount "+m)
	}
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && pid != os.Getpid() && processMatches(pid, nil, s.Dir) {
			out = append(out, "process "+e.Name())
		}
	}
	cgs, _ := globAll("/sys/fs/cgroup/*/" + Prefix + s.ID + "*")
	for _, c := range cgs {
		out = append(out, "cgroup "+c)
	}
	if _, err := os.Stat(s.Dir); err == nil {
		out = append(out, "dir "+s.Dir)
	}
	return out
}

// PodNetns lists the pod network namespaces containerd mounted for this
// node (under its run dir).
func (n *Node) PodNetns() []string { return podNetnsUnder(n.Dir) }

// Mounts lists every mount under the node's directory.
func (n *Node) Mounts() []string { return mountsUnder(n.Dir) }

// Processes lists the processes of the node: in its netns or its pods'
// netns, or running from its directory.
func (n *Node) Processes() []int {
	seen := map[int]bool{}
	for _, p := range append([]string{n.NSPath}, n.PodNetns()...) {
		for _, pid := range processesInNetns(p) {
			seen[pid] = true
		}
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != os.Getpid() && processMatches(pid, nil, n.Dir) {
			seen[pid] = true
		}
	}
	out := make([]int, 0, len(seen))
	for pid := range seen {
		out = append(out, pid)
	}
	return out
}

// ExecIn runs a host command inside netns (a path) and returns its output.
func ExecIn(ctx context.Context, netns string, name string, args ...string) (string, error) {
	out, err := execCtx(ctx, "nsenter", append([]string{"--net=" + netns, "--", name}, args...)...)
	if err != nil {
		return out, fmt.Errorf("%s %v in %s: %w: %s", name, args, netns, err, out)
	}
	return out, nil
}
