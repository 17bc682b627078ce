package daemon

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// residentExeKB sums Rss over this process's read-only mappings of its own
// executable, as ReleaseBinaryPages finds them.
func residentExeKB(t *testing.T) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	maps, err := readOnlyFileMappings(f, unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) == 0 {
		t.Fatal("no read-only mapping of /proc/self/exe in /proc/self/smaps")
	}
	var kb int64
	for _, m := range maps {
		kb += m.rssKB
	}
	return kb
}

// kept is in the binary's writable data: releasing must not reset it.
var kept = []string{"before"}

func TestReleaseBinaryPagesUnmapsCodeAndKeepsData(t *testing.T) {
	kept[0] = "changed at run time"
	before := residentExeKB(t)
	if before < 1024 {
		t.Fatalf("only %d kB of the test binary resident before the release: nothing to measure", before)
	}
	r, err := ReleaseBinaryPages()
	if err != nil {
		t.Fatal(err)
	}
	after := residentExeKB(t)
	t.Logf("resident read-only pages of the executable: %d kB before, %d kB after (%d mappings released)", before, after, r.Mappings)
	if r.Mappings == 0 || r.ResidentKB < before/2 {
		t.Errorf("released %+v; %d kB were resident", r, before)
	}
	// The few pages the code run since has mapped back (with the
	// kernel's fault-around) are far fewer than were resident.
	if after > before-1024 {
		t.Errorf("%d kB still resident after the release, %d before: the pages were not unmapped", after, before)
	}
	// Code and data still work: what runs again is mapped back.
	if !regexp.MustCompile(`^chan.*time$`).MatchString(kept[0]) {
		t.Errorf("writable data lost: kept[0] = %q", kept[0])
	}
}

const smapsFixture = `00400000-0104d000 r-xp 00000000 fe:00 9986173                            /usr/bin/holdfastd
Size:              12596 kB
Rss:                9004 kB
Private_Dirty:      9004 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
0104d000-01d64000 r--p 00c4d000 fe:00 9986173                            /usr/bin/holdfastd
Rss:                9112 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
01d64000-01e02000 rw-p 01964000 fe:00 9986173                            /usr/bin/holdfastd
Rss:                 440 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
01e02000-01e03000 r--p 01a02000 fe:00 9986173                            /usr/bin/holdfastd
Rss:                   4 kB
Private_Dirty:         4 kB
Anonymous:             4 kB
7f0000000000-7f0000100000 r-xp 00000000 fe:00 1234                       /usr/lib/other.so
Rss:                 100 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 r-xp 00000000 fe:01 9986173                    /mnt/same-inode-other-device
Rss:                 100 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  12 kB
`

func TestReadOnlyFileMappingsPicksTheExecutablesCleanReadOnlyMappings(t *testing.T) {
	got, err := readOnlyFileMappings(strings.NewReader(smapsFixture), 0xfe, 0, 9986173)
	if err != nil {
		t.Fatal(err)
	}
	want := []mapping{{0x400000, 0x104d000, 9004}, {0x104d000, 0x1d64000, 9112}}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v (not the writable, privately copied, other file's or other device's mappings)", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestReadOnlyFileMappingsRefusesMalformedListings(t *testing.T) {
	for name, text := range map[string]string{
		"field first":   "Rss: 4 kB\n",
		"bad range":     "zz-01 r-xp 00000000 fe:00 1 /x\n",
		"empty range":   "0400-0400 r-xp 00000000 fe:00 1 /x\n",
		"bad device":    "0400-0800 r-xp 00000000 fe00 1 /x\n",
		"bad inode":     "0400-0800 r-xp 00000000 fe:00 x /x\n",
		"short line":    "0400-0800 r-xp\n",
		"bad size":      "0400-0800 r-xp 00000000 fe:00 1 /x\nRss: many kB\n",
		"negative size": "0400-0800 r-xp 00000000 fe:00 1 /x\nAnonymous: -4 kB\n",
	} {
		if got, err := readOnlyFileMappings(strings.NewReader(text), 0xfe, 0, 1); err == nil {
			t.Errorf("%s: accepted %q: %+v", name, text, got)
		}
	}
}

func FuzzReadOnlyFileMappings(f *testing.F) {
	f.Add(smapsFixture)
	f.Add("0400-0800 r-xp 00000000 fe:00 1 /x\nRss: 4 kB\n")
	f.Fuzz(func(t *testing.T, text string) {
		maps, err := readOnlyFileMappings(strings.NewReader(text), 0xfe, 0, 1)
		if err != nil {
			return
		}
		for _, m := range maps {
			if m.end <= m.start || m.rssKB < 0 {
				t.Fatalf("accepted a mapping that makes no sense: %+v", m)
			}
		}
	})
}
