package verdicts

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	d, err := Parse([]byte(`{"self":"node1","unit":"u","members":["node1","node2"],"verdicts":{"node1":"alive","node2":"dead"}}`))
	if err != nil || d.Verdicts["node2"] != "dead" || d.Self != "node1" {
		t.Fatalf("%v %v", d, err)
	}
	// holdfastd health's own document: members is a count.
	if d, err := Parse([]byte(`{"self":"node1","unit":"","members":3,"verdicts":{"node1":"alive","node2":"unknown","node3":"dead"}}`)); err != nil || d.Verdicts["node3"] != "dead" {
		t.Fatalf("health document refused: %v", err)
	}
	for _, bad := range []string{`{`, `{"self":"x"}`, `{"verdicts":{"n":"zombie"}}`, `[]`} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	if _, err := Parse([]byte(`{"verdicts":{"n":"zombie"}}`)); !strings.Contains(err.Error(), "zombie") {
		t.Errorf("error does not name the bad verdict: %v", err)
	}
}

func TestPollerFollowsSourceAndForgetsStale(t *testing.T) {
	var mu sync.Mutex
	body, status := `{"self":"node1","verdicts":{"node2":"alive"}}`, 200
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	defer srv.Close()
	var changes []map[string]string
	p, err := New(Options{URL: srv.URL, Interval: DefaultInterval, MaxAge: 50 * time.Millisecond, OnChange: func(m map[string]string) { changes = append(changes, m) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p.PollOnce(ctx)
	if p.Current()["node2"] != "alive" || len(changes) != 1 {
		t.Fatalf("after first poll: %v changes %v", p.Current(), changes)
	}
	p.PollOnce(ctx) // same content: no change callback
	mu.Lock()
	body = `{"verdicts":{"node2":"dead"}}`
	mu.Unlock()
	p.PollOnce(ctx)
	if p.Current()["node2"] != "dead" || len(changes) != 2 {
		t.Fatalf("after change: %v changes %d", p.Current(), len(changes))
	}
	mu.Lock()
	status = 500
	mu.Unlock()
	p.PollOnce(ctx) // failure within MaxAge keeps the last verdicts
	if p.Current() == nil || p.LastError() == nil {
		t.Fatalf("failure within max age dropped verdicts")
	}
	time.Sleep(60 * time.Millisecond) // age past MaxAge (50 ms): time passing, not a readiness wait
	p.PollOnce(ctx)
	if p.Current() != nil || len(changes) != 3 || changes[2] != nil {
		t.Fatalf("stale verdicts kept: %v changes %v", p.Current(), changes)
	}
}

// TestNewRefusesZeroSettings: a zero or negative period is refused with the
// setting's name, not silently replaced by a default.
func TestNewRefusesZeroSettings(t *testing.T) {
	good := Options{URL: "http://127.0.0.1:1/v1/verdicts", Interval: DefaultInterval, MaxAge: DefaultMaxAge}
	if _, err := New(good); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for name, mod := range map[string]func(*Options){
		"no URL":   func(o *Options) { o.URL = "" },
		"interval": func(o *Options) { o.Interval = 0 },
		"max age":  func(o *Options) { o.MaxAge = -time.Second },
	} {
		o := good
		mod(&o)
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v, want an error naming it", name, err)
		}
	}
}
