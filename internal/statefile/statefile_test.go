package statefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type rec struct{ A string }

func TestRoundTripAndRefusals(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.json")
	if err := Save(p, "test", 2, rec{"x"}); err != nil {
		t.Fatal(err)
	}
	var r rec
	if v, err := Load(p, "test", 2, &r); err != nil || v != 2 || r.A != "x" {
		t.Fatalf("load: v=%d r=%+v err=%v", v, r, err)
	}
	if _, err := Load(p, "test", 1, &r); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("future version not refused: %v", err)
	}
	if _, err := Load(p, "other", 2, &r); err == nil || !strings.Contains(err.Error(), "kind") {
		t.Fatalf("wrong kind not refused: %v", err)
	}
	data, _ := os.ReadFile(p)
	flipped := strings.Replace(string(data), `"x"`, `"y"`, 1)
	os.WriteFile(p, []byte(flipped), 0o600)
	if _, err := Load(p, "test", 2, &r); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("flipped byte not refused: %v", err)
	}
	os.WriteFile(p, data[:len(data)/2], 0o600)
	if _, err := Load(p, "test", 2, &r); err == nil {
		t.Fatal("truncated file not refused")
	}
}

func FuzzDecode(f *testing.F) {
	good, _ := Encode("test", 1, rec{"seed"})
	f.Add(good)
	f.Add([]byte(`{"kind":"test","version":1}`))
	f.Add(append(append([]byte{}, good...), good...))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r rec
		if _, err := Decode(data, "test", 1, &r); err != nil {
			return
		}
		// Whatever is accepted stops being accepted with a byte after it.
		if _, err := Decode(append(append([]byte{}, data...), 'x'), "test", 1, &r); err == nil {
			t.Fatalf("accepted %q followed by a stray byte", data)
		}
	})
}

// TestTrailingBytesRefused: anything but whitespace after a valid envelope
// (a second document, a torn append, garbage) makes the whole file refused,
// so no reader acts on a file that is not exactly what a writer wrote.
func TestTrailingBytesRefused(t *testing.T) {
	good, err := Encode("test", 1, rec{"x"})
	if err != nil {
		t.Fatal(err)
	}
	var r rec
	if _, err := Decode(append(append([]byte{}, good...), " \n\t\r\n"...), "test", 1, &r); err != nil {
		t.Fatalf("trailing whitespace refused: %v", err)
	}
	for _, tail := range []string{"x", "{}", string(good), `"`, "\x00", "]"} {
		data := append(append([]byte{}, good...), tail...)
		if _, err := Decode(data, "test", 1, &r); err == nil || !strings.Contains(err.Error(), "trailing") {
			t.Errorf("tail %q: want a trailing-data error, got %v", tail, err)
		}
	}
	p := filepath.Join(t.TempDir(), "s.json")
	os.WriteFile(p, append(append([]byte{}, good...), "junk"...), 0o600)
	if _, err := Load(p, "test", 1, &r); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "trailing") {
		t.Fatalf("Load: want an error naming %s and the trailing data, got %v", p, err)
	}
}
