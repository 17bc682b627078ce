package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestContainerd2Pin: the version the harness looks for is the one
// test/tools/build.sh builds.
func TestContainerd2Pin(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(RepoRoot(), "test", "tools", "containerd", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "github.com/containerd/containerd/v2 " + Containerd2Version; !strings.Contains(string(data), want) {
		t.Fatalf("test/tools/containerd/go.mod does not require %q", want)
	}
}

func TestSelectedContainerd(t *testing.T) {
	for _, tc := range []struct{ env, version, err string }{
		{"", "1.6", ""},
		{"1.6", "1.6", ""},
		{"2", "", `HOLDFAST_CONTAINERD="2": want 1.6`},
		{"1.7", "", `want 1.6 (Debian's containerd) or 2.1`},
	} {
		t.Setenv(ContainerdEnv, tc.env)
		c, err := SelectedContainerd()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s=%q: error %v, want %q", ContainerdEnv, tc.env, err, tc.err)
			}
			continue
		}
		if err != nil || c.Version != tc.version || !strings.HasPrefix(c.config, "version = 2\n") {
			t.Errorf("%s=%q: %+v %v", ContainerdEnv, tc.env, c, err)
		}
	}
	// 2.1 wants its own shim first on containerd's PATH.
	t.Setenv(ContainerdEnv, "2.1")
	c, err := SelectedContainerd()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.config, "version = 3\n") || !strings.Contains(strings.Join(c.env(), "\n"), "PATH="+Containerd2Dir()+":") {
		t.Fatalf("2.1: config or PATH wrong: %+v", c)
	}
}
