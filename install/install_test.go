package install

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"gopkg.in/yaml.v3"

	"github.com/holdfast-edge/holdfast/internal/statefile"
)

var update = flag.Bool("update", false, "rewrite golden files")

// copyTree copies a testdata node root into a fresh temp dir, keeping
// modes and symlinks; .keep files only exist to keep empty dirs in git.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case info.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case d.Name() == ".keep":
			return nil
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, info.Mode().Perm())
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// treeHash hashes every path, type, permission, symlink target and file
// content under root.
func treeHash(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s %v", rel, info.Mode())
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			line += " -> " + l
		case info.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(data)
			line += " " + hex.EncodeToString(s[:])
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Fprintln(h, l)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sourceDir holds stand-ins for the three built binaries (their bytes are
// what is checked: copied exactly, restored exactly).
func sourceDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for _, n := range []string{"holdfast", "holdfast-ipam", "holdfastd"} {
		if err := os.WriteFile(filepath.Join(d, n), []byte("\x7fELF stand-in for "+n+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("golden file %s: %v (run go test ./install -run %s -update)", p, err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden file %s:\n--- got\n%s\n--- want\n%s", name, p, got, want)
	}
}

func testOptions(root, src, node string) Options {
	o := DefaultOptions()
	o.Root, o.SourceDir, o.NodeName = root, src, node
	return o
}

var nodes = []struct {
	dir, node string
	conflist  string // expected new conflist
	original  string // the runtime's conflist before install
}{
	{"flannel-kubeadm", "edge-a1", "/etc/cni/net.d/00-holdfast.conflist", "/etc/cni/net.d/10-flannel.conflist"},
	{"bridge-kubeadm", "edge-b1", "/etc/cni/net.d/00-holdfast.conflist", "/etc/cni/net.d/10-containerd-net.conflist"},
	{"flags-only", "edge-c1", "/etc/cni/net.d/00-holdfast.conflist", "/etc/cni/net.d/10-mynet.conf"},
}

func TestInstallGolden(t *testing.T) {
	for _, n := range nodes {
		t.Run(n.dir, func(t *testing.T) {
			root := copyTree(t, filepath.Join("testdata", "nodes", n.dir))
			src := sourceDir(t)
			o := testOptions(root, src, n.node)
			h0 := treeHash(t, root)
			origConf, err := os.ReadFile(filepath.Join(root, n.original))
			if err != nil {
				t.Fatal(err)
			}

			// Dry run: the exact diff, nothing written.
			var dry bytes.Buffer
			if err := Install(o, true, &dry); err != nil {
				t.Fatalf("dry run: %v", err)
			}
			golden(t, n.dir+"/install.diff", dry.Bytes())
			if h := treeHash(t, root); h != h0 {
				t.Fatal("dry run changed the root")
			}

			// Install.
			var out bytes.Buffer
			if err := Install(o, false, &out); err != nil {
				t.Fatalf("install: %v", err)
			}
			golden(t, n.dir+"/install.out", out.Bytes())
			h1 := treeHash(t, root)
			if h1 == h0 {
				t.Fatal("install changed nothing")
			}
			if got, _ := os.ReadFile(filepath.Join(root, n.original)); !bytes.Equal(got, origConf) {
				t.Fatal("install modified the original conflist")
			}
			// The runtime's loader takes the new conflist first and it parses.
			files, err := libcni.ConfFiles(filepath.Join(root, "etc/cni/net.d"), []string{".conf", ".conflist", ".json"})
			if err != nil {
				t.Fatal(err)
			}
			sort.Strings(files)
			if want := filepath.Join(root, n.conflist); files[0] != want {
				t.Fatalf("runtime would load %s first, want %s", files[0], want)
			}
			cl, err := libcni.ConfListFromFile(files[0])
			if err != nil {
				t.Fatalf("libcni rejects the chained conflist: %v", err)
			}
			if len(cl.Plugins) < 2 || cl.Plugins[1].Network.Type != "holdfast" {
				t.Fatalf("holdfast is not chained second: %+v", cl.Plugins)
			}
			for _, b := range []string{"opt/cni/bin/holdfast", "opt/cni/bin/holdfast-ipam", "usr/local/bin/holdfastd"} {
				st, err := os.Stat(filepath.Join(root, b))
				if err != nil || st.Mode().Perm() != 0o755 {
					t.Fatalf("%s not installed executable: %v", b, err)
				}
			}
			// The record is readable.
			rec, err := LoadRecord(filepath.Join(root, recordPath(DefaultStateDir)))
			if err != nil || rec == nil || rec.NodeName != n.node {
				t.Fatalf("install record: %+v, %v", rec, err)
			}

			// Install again: unchanged, nothing written.
			var again bytes.Buffer
			if err := Install(o, false, &again); err != nil {
				t.Fatalf("second install: %v", err)
			}
			if !strings.Contains(again.String(), "unchanged: nothing to do") {
				t.Fatalf("second install did not say unchanged:\n%s", again.String())
			}
			if h := treeHash(t, root); h != h1 {
				t.Fatal("second install changed the root")
			}

			// Uninstall dry run, then uninstall: byte-identical root.
			var udry bytes.Buffer
			if err := Uninstall(o, false, true, &udry); err != nil {
				t.Fatalf("uninstall dry run: %v", err)
			}
			golden(t, n.dir+"/uninstall.diff", udry.Bytes())
			if h := treeHash(t, root); h != h1 {
				t.Fatal("uninstall dry run changed the root")
			}
			var uout bytes.Buffer
			if err := Uninstall(o, false, false, &uout); err != nil {
				t.Fatalf("uninstall: %v", err)
			}
			if h := treeHash(t, root); h != h0 {
				t.Fatalf("uninstall left the root different from before install:\n%s", uout.String())
			}
			var u2 bytes.Buffer
			if err := Uninstall(o, false, false, &u2); err != nil || !strings.Contains(u2.String(), "not installed") {
				t.Fatalf("second uninstall: %v %s", err, u2.String())
			}
		})
	}
}

// TestKubeletEdits checks the kubelet values land where kubelet reads them.
func TestKubeletEdits(t *testing.T) {
	type check struct{ file, contains string }
	for _, tc := range []struct {
		dir    string
		checks []check
	}{
		{"flannel-kubeadm", []check{
			{"var/lib/kubelet/kubeadm-flags.env", "--container-runtime-endpoint=unix:///run/holdfast/cri.sock --node-ip"},
			{"var/lib/kubelet/config.yaml", "# Site edge-a: CoreDNS ClusterIP of the cloud cluster.\nclusterDNS:\n- 169.254.20.10\nclusterDomain"},
			{"var/lib/kubelet/config.yaml", "containerRuntimeEndpoint: \"\"\n"},
			{"var/lib/kubelet/config.yaml", "staticPodPath: /etc/kubernetes/manifests # static pods"},
		}},
		{"bridge-kubeadm", []check{
			{"var/lib/kubelet/config.yaml", "containerRuntimeEndpoint: unix:///run/holdfast/cri.sock # containerd 1.6\n"},
			{"var/lib/kubelet/config.yaml", "staticPodPath: /etc/kubernetes/manifests\nclusterDNS:\n- 169.254.20.10\n"},
			{"var/lib/kubelet/kubeadm-flags.env", "KUBELET_KUBEADM_ARGS=\"--node-ip=198.51.100.12 --pod-infra-container-image=registry.k8s.io/pause:3.10\"\n"},
		}},
		{"flags-only", []check{
			{"var/lib/kubelet/kubeadm-flags.env", "KUBELET_KUBEADM_ARGS=\"--node-ip=198.51.100.13 --container-runtime-endpoint=unix:///run/holdfast/cri.sock --cluster-dns=169.254.20.10\"\n"},
		}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			root := copyTree(t, filepath.Join("testdata", "nodes", tc.dir))
			if err := Install(testOptions(root, sourceDir(t), "n1"), false, &bytes.Buffer{}); err != nil {
				t.Fatal(err)
			}
			for _, c := range tc.checks {
				data, _ := os.ReadFile(filepath.Join(root, c.file))
				if !strings.Contains(string(data), c.contains) {
					t.Errorf("%s does not contain %q:\n%s", c.file, c.contains, data)
				}
			}
			if data, err := os.ReadFile(filepath.Join(root, "var/lib/kubelet/config.yaml")); err == nil {
				var m map[string]any
				if err := yaml.Unmarshal(data, &m); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestMalformedRefused: every malformed input is refused with the file and
// the problem named, and the root is left exactly as it was.
func TestMalformedRefused(t *testing.T) {
	for _, tc := range []struct {
		name, dir, file, content string
		wantErr                  []string
	}{
		{"broken conflist JSON", "flannel-kubeadm", "etc/cni/net.d/10-flannel.conflist", `{"name": "cbr0", "plugins": [`,
			[]string{"/etc/cni/net.d/10-flannel.conflist", "not a JSON object"}},
		{"conflist without plugins", "flannel-kubeadm", "etc/cni/net.d/10-flannel.conflist", `{"name": "cbr0", "cniVersion": "0.3.1", "plugins": []}`,
			[]string{"/etc/cni/net.d/10-flannel.conflist", "conflist has no plugins"}},
		{"conflist with unknown cniVersion", "bridge-kubeadm", "etc/cni/net.d/10-containerd-net.conflist", `{"name": "n", "cniVersion": "9.9.9", "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}}]}`,
			[]string{"10-containerd-net.conflist", `cniVersion "9.9.9" is not supported`}},
		{"dhcp ipam", "bridge-kubeadm", "etc/cni/net.d/10-containerd-net.conflist", `{"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "bridge", "ipam": {"type": "dhcp"}}]}`,
			[]string{"10-containerd-net.conflist", `ipam type "dhcp" is not host-local`}},
		{"broken kubelet YAML", "flannel-kubeadm", "var/lib/kubelet/config.yaml", "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nclusterDNS: [10.96.0.10\n",
			[]string{"/var/lib/kubelet/config.yaml", "not valid YAML"}},
		{"unknown kubelet config apiVersion", "bridge-kubeadm", "var/lib/kubelet/config.yaml", "apiVersion: kubelet.config.k8s.io/v2alpha7\nkind: KubeletConfiguration\nclusterDNS:\n- 10.96.0.10\n",
			[]string{"/var/lib/kubelet/config.yaml", `unknown KubeletConfiguration apiVersion "kubelet.config.k8s.io/v2alpha7"`}},
		{"kubelet config of another kind", "bridge-kubeadm", "var/lib/kubelet/config.yaml", "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: CredentialProviderConfig\n",
			[]string{"/var/lib/kubelet/config.yaml", `kind is "CredentialProviderConfig"`}},
		{"flags file with unterminated quote", "flannel-kubeadm", "var/lib/kubelet/kubeadm-flags.env", "KUBELET_KUBEADM_ARGS=\"--node-ip=198.51.100.11\n",
			[]string{"/var/lib/kubelet/kubeadm-flags.env:1", "unterminated"}},
		{"flags file without the variable", "flags-only", "var/lib/kubelet/kubeadm-flags.env", "KUBELET_EXTRA_ARGS=\n",
			[]string{"/var/lib/kubelet/kubeadm-flags.env", "no KUBELET_KUBEADM_ARGS line"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := copyTree(t, filepath.Join("testdata", "nodes", tc.dir))
			if err := os.WriteFile(filepath.Join(root, tc.file), []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			h0 := treeHash(t, root)
			for _, dry := range []bool{true, false} {
				var out bytes.Buffer
				err := Install(testOptions(root, sourceDir(t), "n1"), dry, &out)
				if err == nil {
					t.Fatalf("install (dry=%v) accepted a malformed %s:\n%s", dry, tc.file, out.String())
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				if out.Len() != 0 {
					t.Errorf("refused install printed changes:\n%s", out.String())
				}
				if h := treeHash(t, root); h != h0 {
					t.Fatal("refused install changed the root")
				}
			}
		})
	}
}

// TestMalformedAfterInstall: a file broken after install blocks a re-install
// without touching anything, and uninstall still restores byte for byte.
func TestUninstallRefusesForeignEdits(t *testing.T) {
	root := copyTree(t, filepath.Join("testdata", "nodes", "flannel-kubeadm"))
	o := testOptions(root, sourceDir(t), "edge-a1")
	if err := Install(o, false, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(root, "etc/systemd/system/holdfast-cri.service")
	if err := os.WriteFile(unit, []byte("# edited by an operator\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := treeHash(t, root)
	err := Uninstall(o, false, false, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "/etc/systemd/system/holdfast-cri.service") {
		t.Fatalf("uninstall over a foreign edit: %v", err)
	}
	if treeHash(t, root) != h {
		t.Fatal("refused uninstall changed the root")
	}
	if err := Uninstall(o, true, false, &bytes.Buffer{}); err != nil {
		t.Fatalf("forced uninstall: %v", err)
	}
	if _, err := os.Stat(unit); !os.IsNotExist(err) {
		t.Fatalf("forced uninstall left the unit: %v", err)
	}
}

// TestReinstallSwitchesToDaemonSets: a second install with other options
// removes what the first added and no longer belongs.
func TestReinstallSwitchesToDaemonSets(t *testing.T) {
	root := copyTree(t, filepath.Join("testdata", "nodes", "bridge-kubeadm"))
	h0 := treeHash(t, root)
	o := testOptions(root, sourceDir(t), "edge-b1")
	if err := Install(o, false, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	o.DaemonSets = true
	var out bytes.Buffer
	if err := Install(o, false, &out); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"holdfast-agent.service", "multi-user.target.wants/holdfast-agent.service", "kubelet.service.wants/holdfast-agent.service"} {
		if _, err := os.Lstat(filepath.Join(root, "etc/systemd/system", u)); !os.IsNotExist(err) {
			t.Errorf("%s still there after switching to DaemonSets (%v):\n%s", u, err, out.String())
		}
	}
	if err := Uninstall(o, false, false, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if treeHash(t, root) != h0 {
		t.Fatal("uninstall after re-install did not restore the root")
	}
}

// TestReinstallRemovesRetiredUnits: a node installed by an older holdfast
// has units this one no longer writes (holdfast-snapshot.service before
// the watcher moved into holdfast-cri.service); installing over it
// removes them and their enablement links, as they are in its record.
func TestReinstallRemovesRetiredUnits(t *testing.T) {
	root := copyTree(t, filepath.Join("testdata", "nodes", "bridge-kubeadm"))
	h0 := treeHash(t, root)
	o := testOptions(root, sourceDir(t), "edge-b1")
	if err := Install(o, false, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	// What the older install wrote, and recorded, beside the rest.
	recFile := filepath.Join(root, recordPath(DefaultStateDir))
	rec, err := LoadRecord(recFile)
	if err != nil {
		t.Fatal(err)
	}
	unitDir := "/etc/systemd/system"
	old := "[Unit]\nDescription=holdfast snapshot watcher\n[Service]\nExecStart=/usr/local/bin/holdfastd snapshot watch\n"
	if err := os.WriteFile(filepath.Join(root, unitDir, "holdfast-snapshot.service"), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(unitDir, "multi-user.target.wants", "holdfast-snapshot.service")
	if err := os.Symlink("../holdfast-snapshot.service", filepath.Join(root, link)); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(old))
	rec.Files = append(rec.Files,
		FileRecord{Path: path.Join(unitDir, "holdfast-snapshot.service"), SHA256: hex.EncodeToString(sum[:]), Role: roleUnit},
		FileRecord{Path: link, Link: "../holdfast-snapshot.service", Role: roleLink})
	if err := statefile.Save(recFile, RecordKind, RecordVersion, rec); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Install(o, false, &out); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path.Join(unitDir, "holdfast-snapshot.service"), link} {
		if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Errorf("%s still there after installing over the older install (%v):\n%s", p, err, out.String())
		}
	}
	// Its process runs on until stopped, holding what replaced it.
	if want := "next: systemctl stop holdfast-snapshot.service; systemctl daemon-reload"; !strings.Contains(out.String(), want) {
		t.Errorf("install over the older install does not say %q:\n%s", want, out.String())
	}
	out.Reset()
	if err := Uninstall(o, false, false, &out); err != nil {
		t.Fatal(err)
	}
	if treeHash(t, root) != h0 {
		t.Fatal("uninstall after the re-install did not restore the root")
	}
	want := "next: systemctl daemon-reload && systemctl restart kubelet && systemctl stop holdfast-agent.service holdfast-cri.service holdfast-snapshot-restore.service"
	if !strings.Contains(out.String(), want) {
		t.Errorf("uninstall does not say %q:\n%s", want, out.String())
	}
}
