package footprint

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times (fixed at
// 100 in the Linux ABI, whatever the kernel's HZ).
const clockTicks = 100

// cpuSeconds is the CPU time pid and its waited-for children have used
// (/proc/<pid>/stat utime+stime+cutime+cstime): a daemon's periodic helper
// commands (iptables-save, nft) count as its own cost.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads fields 14-17 of a /proc/<pid>/stat line. The command
// name (field 2) is in parentheses and may hold spaces and parentheses, so
// the fields are counted from the last ')'.
func parseStatCPU(b []byte) (float64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no ')' in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime..cstime are fields 14..17.
	if len(f) < 15 {
		return 0, fmt.Errorf("stat: %d fields after the command, want at least 15", len(f))
	}
	var ticks uint64
	for _, s := range f[11:15] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: time field %q: %w", s, err)
		}
		ticks += v
	}
	return float64(ticks) / clockTicks, nil
}

// memory is a process's resident and proportional set sizes in bytes
// (/proc/<pid>/smaps_rollup): RSS counts every resident page it maps, PSS
// shares each page among the processes that map it (the holdfastd binary
// mapped by three daemons counts a third in each); Anon is the resident
// anonymous memory (heap, stacks: what the process itself allocated).
type memory struct{ RSS, PSS, Anon uint64 }

func readMemory(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return memory{}, err
	}
	return parseSmapsRollup(b)
}

func parseSmapsRollup(b []byte) (memory, error) {
	var m memory
	var haveRSS, havePSS bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("smaps_rollup: %s %q: %w", f[0], f[1], err)
		}
		switch f[0] {
		case "Rss:":
			m.RSS, haveRSS = v*1024, true
		case "Pss:":
			m.PSS, havePSS = v*1024, true
		case "Anonymous:":
			m.Anon = v * 1024
		}
	}
	if !haveRSS || !havePSS {
		return memory{}, fmt.Errorf("smaps_rollup: no Rss or Pss line")
	}
	return m, nil
}
