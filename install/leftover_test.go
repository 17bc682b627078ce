package install

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
)

// TestInstallSweepsKilledRunsTemps: an install killed between writing a
// temp file and its rename (of the record, a backup, a file it installs)
// leaves the temp file; the next install removes exactly those, and leaves
// other temp-looking files in the shared directories alone.
func TestInstallSweepsKilledRunsTemps(t *testing.T) {
	n := nodes[0]
	root := copyTree(t, filepath.Join("testdata", "nodes", n.dir))
	o := testOptions(root, sourceDir(t), n.node)
	var left []string
	for _, target := range []string{recordPath(o.StateDir), backupPath(o.StateDir, "0123abcd"), n.conflist} {
		hp := o.host(target)
		os.MkdirAll(filepath.Dir(hp), 0o755)
		f, err := os.CreateTemp(filepath.Dir(hp), atomicfile.TempPattern(filepath.Base(hp)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		left = append(left, f.Name())
	}
	foreign := o.host("/etc/cni/net.d/.99-other.conflist.tmp-1")
	os.WriteFile(foreign, []byte("another tool's"), 0o600)
	var out bytes.Buffer
	if err := Install(o, false, &out); err != nil {
		t.Fatalf("install: %v\n%s", err, out.String())
	}
	for _, p := range left {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("leftover %s survived the next install", p)
		}
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Fatalf("another tool's temp file in a shared dir was removed: %v", err)
	}
}
