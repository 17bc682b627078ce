package units

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func testConfig(t *testing.T) Config {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Config{Holdfastd: exe, NodeName: "edge-a1", CRISocket: "/run/holdfast/cri.sock",
		RuntimeEndpoint: "unix:///run/containerd/containerd.sock", NodeDNS: "169.254.20.10",
		HealthKeyFile: "/var/lib/holdfast/health/node.key", Kubeconfig: "/etc/holdfast/kubeconfig"}
}

// TestSystemdAnalyzeVerify runs systemd's own checker on every unit, with
// ExecStart pointing at a real executable (this test binary), against the
// host's installed units (containerd.service is installed on test machines).
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze not found: install Debian package systemd (apt-get install systemd): %v", err)
	}
	for _, ds := range []bool{false, true} {
		c := testConfig(t)
		c.DaemonSets = ds
		us, err := Render(c)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		var files []string
		for _, u := range us {
			p := filepath.Join(dir, u.Name)
			if err := os.WriteFile(p, []byte(u.Content), 0o644); err != nil {
				t.Fatal(err)
			}
			files = append(files, p)
		}
		out, err := exec.Command(sa, append([]string{"verify"}, files...)...).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) != 0 {
			t.Fatalf("systemd-analyze verify (daemonsets=%v): %v\n%s", ds, err, out)
		}
		if want := 3; !ds && len(us) != want || ds && len(us) != 2 {
			t.Fatalf("daemonsets=%v: %d units", ds, len(us))
		}
	}
}

// directives parses a unit into key -> space-joined values.
func directives(content string) map[string][]string {
	m := map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(content))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == '[' {
			continue
		}
		k, v, _ := strings.Cut(l, "=")
		m[k] = append(m[k], strings.Fields(v)...)
	}
	return m
}

func has(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

// TestBootOrder checks the order of docs/boot.md's offline boot sequence.
func TestBootOrder(t *testing.T) {
	us, err := Render(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	d := map[string]map[string][]string{}
	for _, u := range us {
		d[u.Name] = directives(u.Content)
	}
	checks := []struct{ unit, key, val string }{
		{SnapshotRestore, "Type", "oneshot"},
		{SnapshotRestore, "Before", "containerd.service"},
		{SnapshotRestore, "Before", "flanneld.service"},
		{SnapshotRestore, "Before", "kubelet.service"},
		{SnapshotRestore, "WantedBy", "containerd.service"},
		// The node daemon's snapshot watcher starts after the restore.
		{CRI, "After", SnapshotRestore},
		{CRI, "After", "containerd.service"},
		{CRI, "Requires", "containerd.service"},
		{CRI, "Before", "kubelet.service"},
		{CRI, "WantedBy", "kubelet.service"},
		{Agent, "Before", "kubelet.service"},
		{Agent, "After", SnapshotRestore},
		{Agent, "WantedBy", "kubelet.service"},
	}
	for _, c := range checks {
		if !has(d[c.unit][c.key], c.val) {
			t.Errorf("%s: %s does not include %s (has %v)", c.unit, c.key, c.val, d[c.unit][c.key])
		}
	}
	if !strings.Contains(strings.Join(d[CRI]["ExecStart"], " "), "node --node-name edge-a1 --listen /run/holdfast/cri.sock --runtime-endpoint unix:///run/containerd/containerd.sock") {
		t.Errorf("cri ExecStart: %v", d[CRI]["ExecStart"])
	}
	if !strings.Contains(strings.Join(d[Agent]["ExecStart"], " "), "agent --node-name edge-a1 --health-key-file /var/lib/holdfast/health/node.key --health-kubeconfig /etc/holdfast/kubeconfig --dns-listen 169.254.20.10:53 --dns-kubeconfig /etc/holdfast/kubeconfig") {
		t.Errorf("agent ExecStart: %v", d[Agent]["ExecStart"])
	}
}

func TestRenderRefusesBadConfig(t *testing.T) {
	for name, mut := range map[string]func(*Config){
		"relative binary":   func(c *Config) { c.Holdfastd = "holdfastd" },
		"empty node":        func(c *Config) { c.NodeName = "" },
		"node with space":   func(c *Config) { c.NodeName = "a b" },
		"node with percent": func(c *Config) { c.NodeName = "a%n" },
		"relative socket":   func(c *Config) { c.CRISocket = "cri.sock" },
	} {
		c := testConfig(t)
		mut(&c)
		if _, err := Render(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLinks(t *testing.T) {
	us, _ := Render(testConfig(t))
	ls := Links(us, "/etc/systemd/system")
	found := false
	for _, l := range ls {
		if l.Path == "kubelet.service.wants/holdfast-cri.service" && l.Target == "/etc/systemd/system/holdfast-cri.service" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no kubelet.service.wants link for the CRI shim: %+v", ls)
	}
}
