//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// Report is the e2e run's outcome: every assertion with its result and the
// timeline of the run. Its JSON goes to $E2E_REPORT (default
// _output/e2e/report.json).
type Report struct {
	mu         sync.Mutex
	start      time.Time
	out        io.Writer
	Assertions []Assertion `json:"assertions"`
	Timeline   []Event     `json:"timeline"`
}

// Assertion is one checked claim.
type Assertion struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Event is one timeline entry, in ms since the run started.
type Event struct {
	Event  string `json:"event"`
	TMs    int64  `json:"t_ms"`
	Detail string `json:"detail,omitempty"`
}

// NewReport starts the clock; progress lines go to out.
func NewReport(out io.Writer) *Report { return &Report{start: time.Now(), out: out} }

// Mark records an event now.
func (r *Report) Mark(event, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := Event{Event: event, TMs: time.Since(r.start).Milliseconds(), Detail: detail}
	r.Timeline = append(r.Timeline, e)
	fmt.Fprintf(r.out, "  +%7d ms  %-34s %s\n", e.TMs, e.Event, e.Detail)
}

// Check records an assertion; err == nil means it holds.
func (r *Report) Check(name string, err error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := Assertion{Name: name, OK: err == nil}
	status := "ok"
	if err != nil {
		a.Detail = err.Error()
		status = "FAIL"
	}
	r.Assertions = append(r.Assertions, a)
	fmt.Fprintf(r.out, "  [%s] %s", status, name)
	if err != nil {
		fmt.Fprintf(r.out, ": %s", firstLines(err.Error(), 8))
	}
	fmt.Fprintln(r.out)
	return a.OK
}

// OK reports whether every assertion held.
func (r *Report) OK() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.Assertions {
		if !a.OK {
			return false
		}
	}
	return true
}

// Failures lists the assertions that did not hold, one per line with the
// first line of each detail, so the end of a CI log names them.
func (r *Report) Failures() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, a := range r.Assertions {
		if !a.OK {
			fmt.Fprintf(&b, "\n  FAIL %s: %s", a.Name, strings.SplitN(a.Detail, "\n", 2)[0])
		}
	}
	return b.String()
}

// ReportPath is where Write puts the report.
func ReportPath() string {
	if p := os.Getenv("E2E_REPORT"); p != "" {
		return p
	}
	return filepath.Join(harness.RepoRoot(), "_output", "e2e", "report.json")
}

// Write saves the JSON report.
func (r *Report) Write(path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = append(lines[:n], "…")
	}
	return strings.Join(lines, "\n")
}

func execOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
