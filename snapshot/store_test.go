package snapshot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
)

func sampleSnapshot(node string) *Snapshot {
	return &Snapshot{NodeName: node, CapturedAt: time.Unix(1700000000, 0).UTC(), Devices: []Device{{
		Name: "flannel.1", VNI: 1, Port: 8472, LocalIP: "198.51.100.12", Underlay: "eth0", MTU: 1450,
		MAC: "0e:aa:bb:cc:dd:02", PinnedMAC: "0e:aa:bb:cc:dd:02", Addrs: []string{"10.244.2.0/32"},
		Routes:    []Route{{Dst: "10.244.1.0/24", Via: "10.244.1.0", OnLink: true}},
		FDB:       []FDBEntry{{MAC: "0e:00:00:00:01:01", Dst: "198.51.100.11"}},
		Neighbors: []Neighbor{{IP: "10.244.1.0", MAC: "0e:00:00:00:01:01"}},
	}}, SubnetEnv: &FileCopy{Path: "/run/flannel/subnet.env", Content: "FLANNEL_SUBNET=10.244.2.1/24\n"},
		IPTables: []IPTable{{Table: "nat", Chains: []string{"KUBE-SERVICES"}, Rules: []string{"-A PREROUTING -j KUBE-SERVICES"}}}}
}

func TestSaveKeepsPreviousGenerationAndLoadFallsBack(t *testing.T) {
	dir := t.TempDir()
	s1 := sampleSnapshot("node2")
	if err := Save(dir, s1); err != nil {
		t.Fatal(err)
	}
	s2 := sampleSnapshot("node2")
	s2.Devices[0].Routes = append(s2.Devices[0].Routes, Route{Dst: "10.244.3.0/24", Via: "10.244.3.0", OnLink: true})
	if err := Save(dir, s2); err != nil {
		t.Fatal(err)
	}
	l, err := Load(dir)
	if err != nil || len(l.Snapshot.Devices[0].Routes) != 2 || l.Refused != nil {
		t.Fatalf("load current: %+v %v", l, err)
	}
	// Corrupt the current file: the previous generation is used, the
	// refusal is reported.
	os.WriteFile(filepath.Join(dir, CurrentFile), []byte(`{"kind":"holdfast.network-snapshot","version":1,"sha256":"00","payload":{}}`), 0o600)
	l, err = Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if l.Path != filepath.Join(dir, PreviousFile) || l.Refused == nil || !strings.Contains(l.Refused.Error(), "checksum") {
		t.Fatalf("fallback: path %s refused %v", l.Path, l.Refused)
	}
	// Saving over a corrupt current file keeps the good previous generation.
	s3 := sampleSnapshot("node2")
	if err := Save(dir, s3); err != nil {
		t.Fatal(err)
	}
	prev, err := LoadFile(filepath.Join(dir, PreviousFile))
	if err != nil || len(prev.Devices[0].Routes) != 1 {
		t.Fatalf("previous generation lost: %+v %v", prev, err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("empty dir: %v", err)
	}
	os.WriteFile(filepath.Join(dir, CurrentFile), []byte("{"), 0o600)
	if _, err := Load(dir); err == nil || errors.Is(err, ErrNoSnapshot) || !strings.Contains(err.Error(), CurrentFile) {
		t.Fatalf("corrupt only file: %v", err)
	}
}

// TestTrailingBytesRefused: a current file with bytes after its envelope
// is refused (restore then uses the previous generation) rather than
// restored from.
func TestTrailingBytesRefused(t *testing.T) {
	dir := t.TempDir()
	if err := Save(dir, sampleSnapshot("node2")); err != nil {
		t.Fatal(err)
	}
	if err := Save(dir, sampleSnapshot("node2")); err != nil {
		t.Fatal(err)
	}
	cur := filepath.Join(dir, CurrentFile)
	data, _ := os.ReadFile(cur)
	os.WriteFile(cur, append(data, `{"kind":"holdfast.network-snapshot"}`...), 0o600)
	if _, err := LoadFile(cur); err == nil || !strings.Contains(err.Error(), "trailing") || !strings.Contains(err.Error(), cur) {
		t.Fatalf("LoadFile: want a trailing-data error naming %s, got %v", cur, err)
	}
	l, err := Load(dir)
	if err != nil || l.Path != filepath.Join(dir, PreviousFile) || l.Refused == nil {
		t.Fatalf("Load: want the previous generation with the current refused, got %+v %v", l, err)
	}
}

func TestValidateRejects(t *testing.T) {
	for name, mut := range map[string]func(*Snapshot){
		"no node":       func(s *Snapshot) { s.NodeName = "" },
		"multicast pin": func(s *Snapshot) { s.Devices[0].PinnedMAC = "01:00:5e:00:00:01" },
		"bad route":     func(s *Snapshot) { s.Devices[0].Routes[0].Dst = "10.0.0.0/33" },
		"bad fdb dst":   func(s *Snapshot) { s.Devices[0].FDB[0].Dst = "x" },
		"bad vni":       func(s *Snapshot) { s.Devices[0].VNI = 1 << 24 },
		"bad rule":      func(s *Snapshot) { s.IPTables[0].Rules[0] = "-F" },
		"rule newline":  func(s *Snapshot) { s.IPTables[0].Rules[0] = "-A X -j Y\n-F" },
		"raw table":     func(s *Snapshot) { s.IPTables[0].Table = "raw" },
		"dup device":    func(s *Snapshot) { s.Devices = append(s.Devices, s.Devices[0]) },
		"relative env":  func(s *Snapshot) { s.SubnetEnv.Path = "subnet.env" },
	} {
		s := sampleSnapshot("node2")
		mut(s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if err := Save(t.TempDir(), s); err == nil {
			t.Errorf("%s: saved", name)
		}
	}
}

func FuzzDecode(f *testing.F) {
	good, _ := Encode(sampleSnapshot("node2"))
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(`{"kind":"holdfast.network-snapshot","version":1,"sha256":"","payload":null}`))
	withNFT := sampleSnapshot("node2")
	withNFT.NFTables = []NFTable{{Family: "ip", Name: "kube-proxy", Text: goodNFT}}
	nft, _ := Encode(withNFT)
	f.Add(nft)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Decode(data)
		if err != nil {
			return
		}
		// Whatever decodes is valid and survives a round trip.
		if err := s.Validate(); err != nil {
			t.Fatalf("decoded an invalid snapshot: %v", err)
		}
		again, err := Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(again); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// leftover creates a temp file named the way atomicfile.WriteFile names
// its temp for target: what a writer SIGKILLed before its rename leaves.
func leftover(t *testing.T, target string) string {
	t.Helper()
	f, err := os.CreateTemp(filepath.Dir(target), atomicfile.TempPattern(filepath.Base(target)))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return f.Name()
}

// TestSaveSweepsKilledWritersTemps: the temp files of a `snapshot save`
// (snapshot, previous generation, VTEP MAC pin) killed before its renames
// are gone after the next save, which keeps everything else.
func TestSaveSweepsKilledWritersTemps(t *testing.T) {
	dir := t.TempDir()
	if err := Save(dir, sampleSnapshot("node2")); err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, f := range []string{CurrentFile, PreviousFile, "vtep-mac.json"} {
		left = append(left, leftover(t, filepath.Join(dir, f)))
	}
	if err := Save(dir, sampleSnapshot("node2")); err != nil {
		t.Fatal(err)
	}
	for _, p := range left {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("leftover %s survived the next save", filepath.Base(p))
		}
	}
	if _, err := LoadFile(filepath.Join(dir, CurrentFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(filepath.Join(dir, PreviousFile)); err != nil {
		t.Fatal(err)
	}
}
