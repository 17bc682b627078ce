package containerdconf

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// write puts files (on-node path -> content) under a fresh root.
func write(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, data := range files {
		hp := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(hp, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const v2 = `# containerd 1.6
version = 2
[grpc]
  address = "/run/ctd/ctd.sock" # kubelet's endpoint
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "reg.example/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/libexec/cni"
      conf_dir = "/etc/cni/edge.d"
      max_conf_num = 1
`

const v3 = `# containerd 2.1
version = 3
[grpc]
  address = "/run/ctd/ctd.sock"
[plugins]
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "reg.example/pause:3.9"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/libexec/cni", "/opt/cni/bin"]
    conf_dir = "/etc/cni/edge.d"
  [plugins."io.containerd.grpc.v1.cri"]
    stream_server_address = "127.0.0.1"
`

func TestLoad(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  Config
		found bool
	}{
		{"no config: defaults", nil, Defaults(3), false},
		{"v2", map[string]string{"etc/containerd/config.toml": v2},
			Config{2, "/run/ctd/ctd.sock", "/etc/cni/edge.d", []string{"/usr/libexec/cni"}, 1, "reg.example/pause:3.9"}, true},
		{"v3", map[string]string{"etc/containerd/config.toml": v3},
			Config{3, "/run/ctd/ctd.sock", "/etc/cni/edge.d", []string{"/usr/libexec/cni", "/opt/cni/bin"}, 1, "reg.example/pause:3.9"}, true},
		{"v2 with defaults", map[string]string{"etc/containerd/config.toml": "version = 2\n"}, Defaults(2), true},
		// A version 3 file's grpc.v1.cri section holds only the server
		// settings: CNI there is not what containerd 2.x reads.
		{"v3 reads only the v3 plugins", map[string]string{"etc/containerd/config.toml": "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.cni]\nconf_dir = '/etc/cni/a'\n"},
			func() Config { c := Defaults(3); c.CNIConfDir = "/etc/cni/a"; return c }(), true},
		{"imports override, in name order", map[string]string{
			"etc/containerd/config.toml":        "version = 3\nimports = ['conf.d/*.toml']\n" + v3[strings.Index(v3, "[grpc]"):],
			"etc/containerd/conf.d/10-cni.toml": "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.cni]\nconf_dir = '/etc/cni/ten'\nmax_conf_num = 2\n",
			"etc/containerd/conf.d/20-cni.toml": "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.cni]\nconf_dir = '/etc/cni/twenty'\n",
		}, Config{3, "/run/ctd/ctd.sock", "/etc/cni/twenty", []string{"/usr/libexec/cni", "/opt/cni/bin"}, 2, "reg.example/pause:3.9"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, found, err := Load(write(t, tc.files), "/etc/containerd/config.toml")
			if err != nil {
				t.Fatal(err)
			}
			if found != tc.found || !reflect.DeepEqual(c, tc.want) {
				t.Fatalf("got %+v (found %v), want %+v (found %v)", c, found, tc.want, tc.found)
			}
		})
	}
}

func TestLoadRefuses(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"invalid TOML", "version = 3\n[plugins\n", "not valid TOML"},
		{"version 1", "[plugins.cri]\nsandbox_image = 'x'\n", "version 1"},
		{"unknown version", "version = 4\n", "unknown containerd config version 4"},
		{"relative socket", "version = 3\n[grpc]\naddress = 'ctd.sock'\n", `address "ctd.sock" is not an absolute`},
		{"relative CNI dir", "version = 2\n[plugins.'io.containerd.grpc.v1.cri'.cni]\nconf_dir = 'net.d'\n", `"net.d" is not an absolute path`},
		{"v2 CNI settings in a v3 file", "version = 3\n[plugins.'io.containerd.grpc.v1.cri'.cni]\nconf_dir = '/etc/cni/x'\n", "containerd 2.x ignores"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Load(write(t, map[string]string{"etc/containerd/config.toml": tc.data}), "/etc/containerd/config.toml")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "/etc/containerd/config.toml") {
				t.Fatalf("error %v, want one naming the file and %q", err, tc.want)
			}
		})
	}
}

// FuzzParse: any input is either refused or yields absolute dirs and a
// known version; it never panics.
func FuzzParse(f *testing.F) {
	for _, s := range []string{v2, v3, "version = 2\n", "", "version = 3\nimports = ['a']\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		file, err := parse("config.toml", []byte(data))
		if err != nil {
			return
		}
		c := Defaults(file.version())
		if err := file.apply(&c, "config.toml"); err != nil {
			return
		}
		if c.Version != 2 && c.Version != 3 || !filepath.IsAbs(c.CNIConfDir) || !filepath.IsAbs(c.Address) || len(c.CNIBinDirs) == 0 {
			t.Fatalf("accepted %q as %+v", data, c)
		}
	})
}
