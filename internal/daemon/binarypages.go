package daemon

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// StartupSettle is how long after its start a daemon gives back the pages
// of its binary that start-up touched (ReleaseStartupPages).
const StartupSettle = time.Minute

// ReleaseStartupPages waits StartupSettle, unless ctx ends first, and then
// releases the binary's pages (ReleaseBinaryPages). RSS counts every page
// of the binary a process maps, and start-up (the init of every linked
// package, flag parsing, the first informer sync or snapshot load) maps
// about 19 MB of holdfastd's 27, most of it never run again
// (docs/footprint.md). Failing to release costs memory, not correctness:
// it is logged.
func ReleaseStartupPages(ctx context.Context, log *slog.Logger) {
	t := time.NewTimer(StartupSettle)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return
	case <-t.C:
	}
	r, err := ReleaseBinaryPages()
	if err != nil {
		log.Warn("could not release the binary's start-up pages", "err", err)
		return
	}
	log.Info("released the binary's start-up pages; code that runs again is mapped back from the page cache",
		"mappings", r.Mappings, "resident_before_kB", r.ResidentKB)
}

// Released says what ReleaseBinaryPages unmapped.
type Released struct {
	Mappings   int   // read-only mappings of the executable
	ResidentKB int64 // resident in them before
}

// ReleaseBinaryPages drops this process's page-table entries for the
// read-only, file-backed mappings of its own executable (code, read-only
// data, the function tables) with madvise(MADV_DONTNEED). For such a
// mapping that discards nothing: the pages stay in the page cache, and a
// page that runs again is mapped back by a minor fault, without I/O.
// Writable mappings, and any mapping holding a private copy of a page
// (which only a write could have made), are left alone.
func ReleaseBinaryPages() (Released, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return Released{}, fmt.Errorf("stat /proc/self/exe: %w", err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return Released{}, err
	}
	maps, err := readOnlyFileMappings(f, unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	f.Close()
	if err != nil {
		return Released{}, fmt.Errorf("/proc/self/smaps: %w", err)
	}
	var r Released
	for _, m := range maps {
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(m.start), uintptr(m.end-m.start), unix.MADV_DONTNEED); e != 0 {
			return r, fmt.Errorf("madvise %x-%x: %w", m.start, m.end, e)
		}
		r.Mappings++
		r.ResidentKB += m.rssKB
	}
	return r, nil
}

// mapping is one entry of /proc/<pid>/smaps that ReleaseBinaryPages may drop.
type mapping struct {
	start, end uint64
	rssKB      int64
}

// smapsEntry is one entry of /proc/<pid>/smaps while it is read.
type smapsEntry struct {
	mapping
	ours   bool  // a read-only mapping of the file dev:ino
	anonKB int64 // private copies of pages, which a re-fault cannot restore
}

// readOnlyFileMappings returns the mappings in an smaps listing that map
// the file major:minor:ino without write permission and hold no page of
// their own (Anonymous is 0; Private_Dirty is not a sign of one: it also
// counts page-cache pages of a file not yet written back).
func readOnlyFileMappings(r io.Reader, major, minor uint32, ino uint64) ([]mapping, error) {
	var out []mapping
	var cur *smapsEntry
	flush := func() {
		if cur != nil && cur.ours && cur.anonKB == 0 {
			out = append(out, cur.mapping)
		}
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		key, val, isField := smapsField(line)
		if isField {
			if cur == nil {
				return nil, fmt.Errorf("field %q before any mapping", line)
			}
			if err := cur.add(key, val); err != nil {
				return nil, err
			}
			continue
		}
		e, err := parseSmapsHeader(line, major, minor, ino)
		if err != nil {
			return nil, err
		}
		flush()
		cur = &e
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	flush()
	return out, nil
}

// smapsField splits a "Key:   123 kB" (or "VmFlags: rd ex") line.
func smapsField(line string) (key, val string, ok bool) {
	key, val, ok = strings.Cut(line, ":")
	if !ok || strings.ContainsAny(key, " -") {
		return "", "", false
	}
	return key, strings.TrimSpace(val), true
}

func (e *smapsEntry) add(key, val string) error {
	if key != "Rss" && key != "Anonymous" {
		return nil
	}
	kb, err := strconv.ParseInt(strings.TrimSuffix(val, " kB"), 10, 64)
	if err != nil || kb < 0 {
		return fmt.Errorf("%s: %q is not a size in kB", key, val)
	}
	if key == "Rss" {
		e.rssKB = kb
	} else {
		e.anonKB = kb
	}
	return nil
}

// parseSmapsHeader parses "start-end perms offset major:minor inode [path]".
func parseSmapsHeader(line string, major, minor uint32, ino uint64) (smapsEntry, error) {
	f := strings.Fields(line)
	if len(f) < 5 {
		return smapsEntry{}, fmt.Errorf("mapping line %q: want at least 5 fields", line)
	}
	lo, hi, ok := strings.Cut(f[0], "-")
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	if !ok || err1 != nil || err2 != nil || end <= start {
		return smapsEntry{}, fmt.Errorf("mapping line %q: bad address range", line)
	}
	dmaj, dmin, ok := strings.Cut(f[3], ":")
	gotMaj, err1 := strconv.ParseUint(dmaj, 16, 32)
	gotMin, err2 := strconv.ParseUint(dmin, 16, 32)
	gotIno, err3 := strconv.ParseUint(f[4], 10, 64)
	if !ok || err1 != nil || err2 != nil || err3 != nil {
		return smapsEntry{}, fmt.Errorf("mapping line %q: bad device or inode", line)
	}
	ours := gotIno == ino && ino != 0 && uint32(gotMaj) == major && uint32(gotMin) == minor &&
		len(f[1]) == 4 && f[1][1] != 'w'
	return smapsEntry{mapping: mapping{start: start, end: end}, ours: ours}, nil
}
