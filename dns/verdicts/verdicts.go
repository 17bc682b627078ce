// Package verdicts polls the health daemon's verdict endpoint (JSON
// {"self","unit","members","verdicts":{NODE:"alive"|"dead"|"unknown"}}) and
// hands the node → verdict map to the DNS resolver. It owns only the last
// good poll; it never votes and never writes anything.
package verdicts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"sync"
	"time"
)

// Document is the verdict endpoint's JSON.
type Document struct {
	Self string `json:"self"`
	Unit string `json:"unit"`
	// Members is informational only (holdfastd health sends a count);
	// its shape is not checked.
	Members  json.RawMessage   `json:"members,omitempty"`
	Verdicts map[string]string `json:"verdicts"`
}

// Parse checks a verdict document: every verdict is alive, dead or unknown.
func Parse(data []byte) (*Document, error) {
	var d Document
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("verdict document: %w", err)
	}
	if d.Verdicts == nil {
		return nil, fmt.Errorf("verdict document has no \"verdicts\" object")
	}
	for node, v := range d.Verdicts {
		switch v {
		case "alive", "dead", "unknown":
		default:
			return nil, fmt.Errorf("verdict document: node %q has verdict %q, want alive, dead or unknown", node, v)
		}
	}
	return &d, nil
}

// Defaults of the poll period and of how long verdicts are kept without a
// successful poll.
const (
	DefaultInterval = 2 * time.Second
	DefaultMaxAge   = 30 * time.Second
)

// Options configure a Poller.
type Options struct {
	URL      string
	Interval time.Duration // poll period, positive (holdfastd: DefaultInterval)
	// MaxAge: verdicts older than this (no successful poll since) are
	// dropped, and answers fall back to snapshot readiness. Positive
	// (holdfastd: DefaultMaxAge).
	MaxAge time.Duration
	Client *http.Client
	Log    *slog.Logger
	// OnChange is called (from the polling goroutine) when the usable
	// verdict map changes, with nil meaning "no verdict source".
	OnChange func(map[string]string)
}

// Poller polls the verdict URL.
type Poller struct {
	opts Options

	mu      sync.Mutex
	current map[string]string
	lastOK  time.Time
	lastErr error
}

// New checks opts and builds a Poller; every error names the setting.
func New(opts Options) (*Poller, error) {
	if opts.URL == "" {
		return nil, errors.New("verdicts: no URL")
	}
	if opts.Interval <= 0 {
		return nil, fmt.Errorf("verdicts: interval %s: want a positive duration", opts.Interval)
	}
	if opts.MaxAge <= 0 {
		return nil, fmt.Errorf("verdicts: max age %s: want a positive duration", opts.MaxAge)
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: opts.Interval}
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Poller{opts: opts}, nil
}

// Current returns the usable verdicts (nil if none).
func (p *Poller) Current() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.current
}

// LastError is the error of the last poll (nil after a success).
func (p *Poller) LastError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// Run polls until ctx ends.
func (p *Poller) Run(ctx context.Context) {
	t := time.NewTicker(p.opts.Interval)
	defer t.Stop()
	for {
		p.PollOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// PollOnce fetches the document once and updates the current verdicts.
func (p *Poller) PollOnce(ctx context.Context) {
	doc, err := p.fetch(ctx)
	now := time.Now()
	p.mu.Lock()
	prev := p.current
	p.lastErr = err
	if err == nil {
		p.lastOK = now
		p.current = doc.Verdicts
	} else if p.current != nil && now.Sub(p.lastOK) > p.opts.MaxAge {
		p.current = nil
	}
	next := p.current
	p.mu.Unlock()

	if err != nil && (prev != nil) != (next != nil) {
		p.opts.Log.Warn("verdict source lost: answering with snapshot readiness", "url", p.opts.URL, "err", err)
	}
	if !maps.Equal(prev, next) || (prev == nil) != (next == nil) {
		if next != nil {
			p.opts.Log.Info("verdicts changed", "url", p.opts.URL, "verdicts", next)
		}
		if p.opts.OnChange != nil {
			p.opts.OnChange(next)
		}
	}
}

func (p *Poller) fetch(ctx context.Context) (*Document, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.opts.URL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.opts.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", p.opts.URL, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", p.opts.URL, err)
	}
	return Parse(data)
}
