package install

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallReadsContainerdConfig: on nodes whose containerd (config
// version 2 for 1.x, version 3 for 2.x) uses its own socket and CNI dirs,
// install puts the plugins and the conflist where containerd looks, points
// the shim at containerd's socket and kubelet away from it, leaves
// containerd's config (comments included) alone, and uninstall gives back
// the root byte for byte.
func TestInstallReadsContainerdConfig(t *testing.T) {
	for _, dir := range []string{"containerd1-custom", "containerd2-custom"} {
		t.Run(dir, func(t *testing.T) {
			root := copyTree(t, filepath.Join("testdata", "nodes", dir))
			o := testOptions(root, sourceDir(t), "edge-d1")
			h0 := treeHash(t, root)
			ctrConf, _ := os.ReadFile(filepath.Join(root, "etc/containerd/config.toml"))
			var out bytes.Buffer
			if err := Install(o, false, &out); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct{ file, contains string }{
				{"etc/systemd/system/holdfast-cri.service", "--runtime-endpoint unix:///run/containerd-edge/containerd.sock\n"},
				{"var/lib/kubelet/config.yaml", "containerRuntimeEndpoint: unix:///run/holdfast/cri.sock\n"},
				{"etc/cni/edge.d/00-holdfast.conflist", `"type": "holdfast"`},
				{"usr/libexec/cni/holdfast-ipam", "stand-in for holdfast-ipam"},
			} {
				data, err := os.ReadFile(filepath.Join(root, c.file))
				if err != nil || !strings.Contains(string(data), c.contains) {
					t.Errorf("%s does not contain %q (%v):\n%s\ninstall said:\n%s", c.file, c.contains, err, data, out.String())
				}
			}
			if !strings.Contains(out.String(), "sandbox image registry.edge.example/pause:3.9") {
				t.Errorf("install did not report containerd's sandbox image:\n%s", out.String())
			}
			if _, err := os.Stat(filepath.Join(root, "opt/cni/bin/holdfast")); err == nil {
				t.Error("plugins installed into /opt/cni/bin, which this containerd does not search first")
			}
			if now, _ := os.ReadFile(filepath.Join(root, "etc/containerd/config.toml")); !bytes.Equal(now, ctrConf) {
				t.Error("install changed containerd's config")
			}
			if err := Uninstall(o, false, false, &bytes.Buffer{}); err != nil {
				t.Fatal(err)
			}
			if treeHash(t, root) != h0 {
				t.Fatal("uninstall left the root different from before install")
			}
		})
	}
}

// TestContainerdMismatch: a flag naming a dir or socket containerd's config
// does not use wins, with a note saying so; a containerd that loads more
// than one CNI config, or a broken config, is refused with the reason, and
// nothing is written.
func TestContainerdMismatch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		set     func(o *Options)
		conf    string // replaces containerd's config if set
		wantErr string
		note    string
	}{
		{name: "conf dir", set: func(o *Options) { o.CNIConfDir = "/etc/cni/net.d" },
			wantErr: "etc/cni/net.d: no such file"}, // it wins: this root has no such dir
		{name: "bin dir", set: func(o *Options) { o.CNIBinDir = "/usr/lib/cni" },
			note: "--cni-bin-dir /usr/lib/cni is used, but containerd (/etc/containerd/config.toml) looks for CNI plugins only in /usr/libexec/cni, /opt/cni/bin"},
		{name: "endpoint", set: func(o *Options) { o.RuntimeEndpoint = "unix:///run/containerd/containerd.sock" },
			note: "--runtime-endpoint unix:///run/containerd/containerd.sock is used, but containerd (/etc/containerd/config.toml) serves CRI on unix:///run/containerd-edge/containerd.sock"},
		{name: "max_conf_num", conf: "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.cni]\nconf_dir = '/etc/cni/edge.d'\nmax_conf_num = 0\n",
			wantErr: "containerd loads 0 CNI configs"},
		{name: "broken config", conf: "version = 3\n[grpc\n", wantErr: "/etc/containerd/config.toml: not valid TOML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := copyTree(t, filepath.Join("testdata", "nodes", "containerd2-custom"))
			if tc.conf != "" {
				if err := os.WriteFile(filepath.Join(root, "etc/containerd/config.toml"), []byte(tc.conf), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			h0 := treeHash(t, root)
			o := testOptions(root, sourceDir(t), "edge-d1")
			if tc.set != nil {
				tc.set(&o)
			}
			var out bytes.Buffer
			err := Install(o, true, &out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q\n%s", err, tc.wantErr, out.String())
				}
			} else if err != nil || !strings.Contains(out.String(), "note: "+tc.note+"\n") {
				t.Fatalf("install: %v, want the note %q in:\n%s", err, tc.note, out.String())
			}
			if treeHash(t, root) != h0 {
				t.Fatal("dry run or refused install changed the root")
			}
		})
	}
}
