package footprint

import (
	"os"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	// pid (comm with ") x") state ppid ... utime=150 stime=50 cutime=30 cstime=20
	line := "4242 (odd) name) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 30 20 20 0 12 0 100 1000 200 18446744073709551615\n"
	got, err := parseStatCPU([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if got != 2.5 {
		t.Fatalf("cpu = %v s, want 2.5 (250 ticks)", got)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 x 1 1 1 1"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q): no error", bad)
		}
	}
	// This process: a real line parses.
	if _, err := cpuSeconds(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

func TestParseSmapsRollup(t *testing.T) {
	in := "00400000-7ffd0000 ---p 00000000 00:00 0    [rollup]\nRss:               12000 kB\nPss:                4000 kB\nPss_Anon:           3000 kB\nAnonymous:          3500 kB\n"
	m, err := parseSmapsRollup([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 12000*1024 || m.PSS != 4000*1024 || m.Anon != 3500*1024 {
		t.Fatalf("got %+v", m)
	}
	if _, err := parseSmapsRollup([]byte("Rss: 1 kB\n")); err == nil {
		t.Fatal("no Pss line: no error")
	}
	if _, err := parseSmapsRollup([]byte("Rss: x kB\nPss: 1 kB\n")); err == nil {
		t.Fatal("bad number: no error")
	}
	if _, err := readMemory(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}
