//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// Checks by DNS name, from inside pods: the pod's own process (busybox
// wget) resolves through the resolv.conf kubelet gave it (holdfast DNS at
// ClusterDNS, search default.svc.cluster.local …) and fetches WhoPath.

// execPod runs cmd in the pod's running container through the node's CRI
// (the shim), as kubelet does for `kubectl exec`.
func (n *Node) execPod(ctx context.Context, uid string, cmd ...string) (string, error) {
	p, err := n.criPod(ctx, uid)
	if err != nil {
		return "", err
	}
	if len(p.Running) != 1 {
		return "", fmt.Errorf("pod %s on %s: %d running containers", uid, n.Name, len(p.Running))
	}
	c, err := harness.DialCRI(n.ShimSock())
	if err != nil {
		return "", err
	}
	defer c.Close()
	ectx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	resp, err := c.ExecSync(ectx, &runtimeapi.ExecSyncRequest{ContainerId: p.Running[0], Cmd: cmd, Timeout: 10})
	if err != nil {
		return "", fmt.Errorf("exec %q: %w", cmd, err)
	}
	if resp.ExitCode != 0 {
		return "", fmt.Errorf("exec %q: exit %d: %s%s", cmd, resp.ExitCode, resp.Stdout, resp.Stderr)
	}
	return string(resp.Stdout), nil
}

// who resolves host (a fully qualified name) with the pod's own resolver
// tool against the nameserver of its resolv.conf (busybox nslookup), then
// fetches http://<address>:PodHTTPPort/who from inside the pod (busybox
// nc: the static busybox's wget crashes in glibc's static getaddrinfo)
// and returns the answering pod's name.
func (n *Node) who(ctx context.Context, uid, host string) (string, error) {
	out, err := n.execPod(ctx, uid, "nslookup", "-type=a", host+".")
	if err != nil {
		return "", err
	}
	ip := firstAddress(out)
	if ip == "" {
		return "", fmt.Errorf("nslookup %s: no address in %q", host, out)
	}
	get := fmt.Sprintf(`printf 'GET %s HTTP/1.0\r\n\r\n' | nc -w 3 "$0" %d`, WhoPath, harness.PodHTTPPort)
	out, err = n.execPod(ctx, uid, "sh", "-c", get, ip)
	if err != nil {
		return "", err
	}
	_, body, ok := strings.Cut(out, "\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.") || !ok {
		return "", fmt.Errorf("GET %s from %s: %q", WhoPath, ip, out)
	}
	return strings.TrimSpace(body), nil
}

// firstAddress is the first "Address:" after a "Name:" line of busybox
// nslookup's output (the lines before name the server).
func firstAddress(out string) string {
	named := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case f[0] == "Name:":
			named = true
		case f[0] == "Address:" && named && len(f) > 1:
			return f[1]
		}
	}
	return ""
}

// target is a name to reach and which pod must answer ("" = any pod of
// the Service).
type target struct{ host, want string }

// reachByName checks that every pod reaches every target by DNS name.
func (s *site) reachByName(ctx context.Context, pods []podView, targets []target) error {
	if len(pods) == 0 || len(targets) == 0 {
		return fmt.Errorf("nothing to check: %d pods, %d targets", len(pods), len(targets))
	}
	var errs []error
	for _, p := range pods {
		n := s.node(p.Node)
		if n == nil {
			errs = append(errs, fmt.Errorf("pod %s on unknown node %q", p.Name, p.Node))
			continue
		}
		for _, tg := range targets {
			err := harness.Eventually(15*time.Second, func() error {
				got, err := n.who(ctx, p.UID, tg.host)
				if err == nil && (got == "" || tg.want != "" && got != tg.want) {
					err = fmt.Errorf("answered by %q, want %q", got, tg.want)
				}
				return err
			})
			if err != nil {
				errs = append(errs, fmt.Errorf("pod %s (%s) → %s: %w", p.Name, n.Name, tg.host, err))
			}
		}
	}
	return errors.Join(errs...)
}

// serviceTargets are the names every pod must reach: the ClusterIP
// Service web, the headless db (any ready pod) and each StatefulSet pod.
func serviceTargets(db []corev1.Pod) []target {
	ts := []target{{host: "web.default.svc.cluster.local"}, {host: "db.default.svc.cluster.local"}}
	return append(ts, dbTargets(views(db))...)
}

// Workload names.
const (
	WebApp = "web" // Deployment + ClusterIP Service
	DBApp  = "db"  // StatefulSet + headless Service
)

// workloadPods lists the pods of both workloads.
func (s *site) workloadPods(ctx context.Context) ([]corev1.Pod, error) {
	var all []corev1.Pod
	for _, app := range []string{WebApp, DBApp} {
		pods, err := PodsOf(ctx, s.cs, "default", app)
		if err != nil {
			return nil, err
		}
		all = append(all, pods...)
	}
	return all, nil
}

func podsOfApp(pods []corev1.Pod, app string) []corev1.Pod {
	var out []corev1.Pod
	for _, p := range pods {
		if p.Labels[AppLabel] == app {
			out = append(out, p)
		}
	}
	return out
}

func views(pods []corev1.Pod) []podView {
	var out []podView
	for i := range pods {
		out = append(out, viewOf(&pods[i]))
	}
	return out
}

// joinLines is nil for no lines, else one error listing them.
func joinLines(lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	return errors.New(strings.Join(lines, "\n"))
}

// answeredBy asks the Service at host:port (ClusterIP or name) tries times
// from netns nsPath and returns the set of pods that answered.
func answeredBy(ctx context.Context, nsPath, host string, tries int) (map[string]int, error) {
	got := map[string]int{}
	var lastErr error
	for i := 0; i < tries; i++ {
		body, err := getIn(ctx, nsPath, fmt.Sprintf("http://%s:%d%s", host, harness.PodHTTPPort, WhoPath))
		if err != nil {
			lastErr = err
			continue
		}
		got[strings.TrimSpace(body)]++
	}
	if len(got) == 0 {
		return nil, fmt.Errorf("no answer from %s in %d tries: %v", host, tries, lastErr)
	}
	return got, nil
}
