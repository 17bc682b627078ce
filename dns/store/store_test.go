package store

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

func TestLoadSeed(t *testing.T) {
	snap, err := LoadSeed("../testdata/seed.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Services) != 3 || len(snap.Slices) != 2 {
		t.Fatalf("got %d services %d slices", len(snap.Services), len(snap.Slices))
	}
	db := snap.Services[1]
	if db.Name != "db" || !db.Headless || len(db.ClusterIPs) != 0 {
		t.Fatalf("headless service: %+v", db)
	}
	sl := snap.Slices[1]
	if sl.Service != "db" || sl.Endpoints[0].Hostname != "db-0" || sl.Endpoints[1].IsReady() || sl.Endpoints[1].NodeName != "node2" || sl.Endpoints[0].TargetName != "db-0" {
		t.Fatalf("slice: %+v", sl)
	}
	if !strings.HasPrefix(snap.Source, "seed:") {
		t.Fatalf("source %q", snap.Source)
	}
}

func TestParseSeedErrors(t *testing.T) {
	cases := map[string]string{
		`not json`:     "not a JSON",
		`{"items":[]}`: "no kind",
		`{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"p","namespace":"n"}}]}`:                                                                `item 0: kind "Pod"`,
		`{"kind":"List","items":[{"kind":"Namespace","metadata":{"name":"a"}},{"kind":"Namespace","metadata":{"name":"a"}}]}`:                             "item 1 (Namespace)",
		`{"kind":"List","items":[{"kind":"Service","metadata":{"name":"s"}}]}`:                                                                            "item 0 (Service): metadata.namespace",
		`{"kind":"List","items":[{"kind":"Service","metadata":{"name":"s","namespace":"n"},"spec":{"ports":"eighty"}}]}`:                                  "item 0 (Service)",
		`{"kind":"List","items":[{"kind":"Service","metadata":{"name":"s","namespace":"n"}},{"kind":"Service","metadata":{"name":"s","namespace":"n"}}]}`: "appears twice",
	}
	for in, want := range cases {
		_, err := ParseSeed([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSeed(%s) = %v, want error containing %q", in, err, want)
		}
	}
	if _, err := LoadSeed(filepath.Join(t.TempDir(), "missing.json")); err == nil || !strings.Contains(err.Error(), "seed file") {
		t.Errorf("missing seed: %v", err)
	}
}

func TestSaveLoadRoundTripDebounced(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, Debounce: 20 * time.Millisecond, MaxDelay: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ch := s.Subscribe()
	s.SetService(Service{Namespace: "default", Name: "web", ClusterIPs: []string{"10.96.0.10"}})
	s.SetSlice(EndpointSlice{Namespace: "default", Name: "web-1", Service: "web", AddressType: "IPv4", Endpoints: []Endpoint{{Addresses: []string{"10.244.1.5"}}}})
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("no change notification")
	}
	if _, err := os.Stat(s.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("saved before the debounce delay: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, err := os.Stat(s.Path()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("debounced save never happened")
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.DeleteService("default", "web")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	v := s2.View()
	if len(v.Services) != 0 || len(v.Slices) != 1 || v.Slices[0].Endpoints[0].Addresses[0] != "10.244.1.5" {
		t.Fatalf("reloaded: %+v", v)
	}
}

func TestRefusedSnapshotStartsEmptyAndIsMovedAside(t *testing.T) {
	for name, write := range map[string]func(path string) error{
		"corrupt": func(p string) error {
			if err := statefile.Save(p, Kind, Version, &Snapshot{Services: []Service{{Namespace: "a", Name: "b"}}}); err != nil {
				return err
			}
			data, _ := os.ReadFile(p)
			return os.WriteFile(p, []byte(strings.Replace(string(data), `"b"`, `"c"`, 1)), 0o600)
		},
		"future":     func(p string) error { return statefile.Save(p, Kind, Version+1, &Snapshot{}) },
		"garbage":    func(p string) error { return os.WriteFile(p, []byte("\x00\x01garbage"), 0o600) },
		"wrong kind": func(p string) error { return statefile.Save(p, "holdfast.other", 1, map[string]int{}) },
		"invalid content": func(p string) error {
			return statefile.Save(p, Kind, Version, &Snapshot{Services: []Service{{Name: "nons"}}})
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			if err := write(path); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(path)
			s, err := Open(Options{Dir: dir})
			if err == nil {
				t.Fatal("refused snapshot loaded without error")
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error does not name the file: %v", err)
			}
			if !s.Empty() {
				t.Fatal("store not empty after refusal")
			}
			after, _ := os.ReadFile(path)
			if string(before) != string(after) {
				t.Fatal("refused file changed by Open")
			}
			s.SetService(Service{Namespace: "default", Name: "x"})
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			aside, err := os.ReadFile(path + ".refused")
			if err != nil || string(aside) != string(before) {
				t.Fatalf("refused file not kept aside: %v", err)
			}
			if _, err := LoadFile(path); err != nil {
				t.Fatalf("new snapshot unreadable: %v", err)
			}
		})
	}
}

func TestMissingSnapshotIsNoError(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil || !s.Empty() {
		t.Fatalf("%v", err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("unchanged empty store wrote a file")
	}
}

func FuzzParseSeed(f *testing.F) {
	data, _ := os.ReadFile("../testdata/seed.json")
	f.Add(data)
	f.Add([]byte(`{"kind":"ServiceList","items":[{"metadata":{"name":"a","namespace":"b"}}]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		snap, err := ParseSeed(in)
		if err != nil {
			return
		}
		if _, err := json.Marshal(snap); err != nil {
			t.Fatal(err)
		}
		for _, s := range snap.Services {
			if s.Namespace == "" || s.Name == "" {
				t.Fatalf("accepted service without key: %+v", s)
			}
		}
	})
}

// TestOpenSweepsKilledDaemonsTemp: a daemon killed mid-save leaves the
// snapshot's temp file; the next Open (the daemon's start, before its
// first save) removes it and loads the snapshot as usual.
func TestOpenSweepsKilledDaemonsTemp(t *testing.T) {
	dir := t.TempDir()
	f, err := os.CreateTemp(dir, atomicfile.TempPattern(FileName))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Open(Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.Name()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover %s survived Open", f.Name())
	}
}
