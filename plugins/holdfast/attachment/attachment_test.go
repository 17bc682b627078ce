package attachment

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

func sample() *Attachment {
	return &Attachment{Network: "hf-pods", PodNamespace: "default", PodName: "web-0", PodUID: "uid-1",
		ContainerID: "c1", IfName: "eth0", IPs: []string{"10.244.1.2/24"}, MAC: "0a:58:0a:f4:01:02",
		Netns: "/var/run/netns/cni-1", Created: time.Unix(1700000000, 0).UTC()}
}

func TestSaveLoadRoundTripListRemove(t *testing.T) {
	dir := t.TempDir()
	path, err := Path(dir, "hf-pods", "c1", "eth0")
	if err != nil || path != filepath.Join(dir, "hf-pods", "c1_eth0.json") {
		t.Fatalf("Path: %s, %v", path, err)
	}
	want := sample()
	if err := Save(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip: got %+v, %v; want %+v", got, err, want)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("record mode %v, want 0600", st.Mode().Perm())
	}
	// List shows records only: not the lock, temp files, other files, dirs.
	netDir := filepath.Dir(path)
	for _, junk := range []string{".c2_eth0.json.tmp-1", "notes.txt", ".hidden.json"} {
		os.WriteFile(filepath.Join(netDir, junk), nil, 0o600)
	}
	os.Mkdir(filepath.Join(netDir, "d.json"), 0o755)
	paths, err := List(dir, "hf-pods")
	if err != nil || len(paths) != 1 || paths[0] != path {
		t.Fatalf("List: %v, %v; want [%s]", paths, err, path)
	}
	if paths, err := List(dir, "other-net"); err != nil || len(paths) != 0 {
		t.Fatalf("List of a network never used: %v, %v", paths, err)
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := Remove(path); err != nil {
		t.Fatalf("second Remove: %v (a missing record is no error)", err)
	}
	if _, err := Load(path); !os.IsNotExist(err) {
		t.Fatalf("Load after Remove: %v", err)
	}
}

func TestPathRefusesUnusableNames(t *testing.T) {
	for _, c := range [][2]string{{"", "eth0"}, {"a/b", "eth0"}, {"..", "eth0"}, {".", "eth0"}, {"c\x00", "eth0"}, {"c1", ""}, {"c1", "../x"}, {"c1", `e\0`}} {
		if p, err := Path("/d", "n", c[0], c[1]); err == nil {
			t.Errorf("Path(%q, %q) = %s, want an error", c[0], c[1], p)
		}
	}
}

// TestLoadRefusesCorruptAndFuture: a flipped byte, a truncated file, bytes
// after the envelope, another kind and a newer schema version are refused
// with an error naming the file, and Load changes nothing.
func TestLoadRefusesCorruptAndFuture(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n", "c1_eth0.json")
	if err := Save(path, sample()); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(path)
	future, err := statefile.Reversion(good, Version+1)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := statefile.Encode("holdfast/other", 1, sample())
	cases := []struct {
		name, want string
		data       []byte
	}{
		{"flipped byte", "checksum", bytes.Replace(good, []byte("web-0"), []byte("web-1"), 1)},
		{"truncated", "not a holdfast state file", good[:len(good)/2]},
		{"trailing bytes", "trailing", append(append([]byte{}, good...), "{}"...)},
		{"other kind", "kind", other},
		{"future version", "newer than this binary supports", future},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			os.WriteFile(path, c.data, 0o600)
			a, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %+v, %v; want an error naming %s and %q", a, err, path, c.want)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, c.data) {
				t.Fatal("Load changed the refused file")
			}
		})
	}
}

// TestSaveSweepsKilledPluginsTemps: Save takes the network dir's lock and
// removes the temp files of plugins killed before their rename; a Save
// while another holder keeps the lock waits rather than racing it.
func TestSaveSweepsKilledPluginsTemps(t *testing.T) {
	netDir := filepath.Join(t.TempDir(), "n")
	os.MkdirAll(netDir, 0o755)
	f, _ := os.CreateTemp(netDir, atomicfile.TempPattern("dead_eth0.json"))
	f.Close()
	if err := Save(filepath.Join(netDir, "c1_eth0.json"), sample()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.Name()); !os.IsNotExist(err) {
		t.Fatalf("leftover %s survived Save", f.Name())
	}
	unlock, err := atomicfile.LockDir(netDir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Save(filepath.Join(netDir, "c2_eth0.json"), sample()) }()
	select {
	case err := <-done:
		t.Fatalf("Save did not wait for the lock: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
