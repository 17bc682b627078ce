package reboot

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Event is one step of a recovery.
type Event struct {
	Event  string `json:"event"`
	TMs    int64  `json:"t_ms"`
	Detail string `json:"detail,omitempty"`
}

// Timeline records events relative to a start time and prints them as they
// happen.
type Timeline struct {
	mu     sync.Mutex
	start  time.Time
	events []Event
	out    io.Writer
}

// NewTimeline starts a timeline now; events are echoed to out (may be nil).
func NewTimeline(out io.Writer) *Timeline { return &Timeline{start: time.Now(), out: out} }

// Mark records an event now.
func (t *Timeline) Mark(event, detail string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := Event{Event: event, TMs: time.Since(t.start).Milliseconds(), Detail: detail}
	t.events = append(t.events, e)
	if t.out != nil {
		line := fmt.Sprintf("  +%6d ms  %s", e.TMs, e.Event)
		if detail != "" {
			line += "  (" + detail + ")"
		}
		fmt.Fprintln(t.out, line)
	}
}

// At returns the time of the first event with this name, or -1.
func (t *Timeline) At(event string) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.events {
		if e.Event == event {
			return e.TMs
		}
	}
	return -1
}

// Events returns a copy of the events.
func (t *Timeline) Events() []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Event{}, t.events...)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
