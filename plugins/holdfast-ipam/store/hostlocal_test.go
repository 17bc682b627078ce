package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseReservation: any content either parses to a non-empty container
// ID and ifname without line breaks, or is refused; what WriteHostLocal
// writes reads back the same.
func FuzzParseReservation(f *testing.F) {
	for _, s := range []string{"abc\r\neth0", "abc", "abc\neth1\n", "", "\r\n", "a\r\nb\r\nc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cid, ifName, err := ParseReservation([]byte(s))
		if err != nil {
			return
		}
		if cid == "" || ifName == "" || strings.ContainsAny(cid+ifName, "\r\n") {
			t.Fatalf("%q parsed to %q, %q", s, cid, ifName)
		}
		if strings.TrimSpace(cid) != cid || strings.TrimSpace(ifName) != ifName {
			return // only round-trip what host-local itself would write
		}
		p := filepath.Join(t.TempDir(), "10.0.0.1")
		if err := WriteHostLocal(p, cid, ifName); err != nil {
			t.Fatal(err)
		}
		if !HostLocalHolds(p, cid, ifName) {
			data, _ := os.ReadFile(p)
			t.Fatalf("wrote %q for %q/%q, does not read back", data, cid, ifName)
		}
		if err := WriteHostLocal(p, cid, ifName); err == nil {
			t.Fatal("WriteHostLocal replaced an existing reservation")
		}
	})
}
