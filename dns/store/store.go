// Package store owns the node's persisted copy of the cluster's Services and
// EndpointSlices: a compact model of just what DNS needs, kept in memory and
// saved (debounced, atomically, through internal/statefile) to one file in
// the DNS state dir. It loads that file first on start so that DNS can answer
// before any apiserver is reachable, and it can seed itself from a
// `kubectl get services,endpointslices -A -o json` List.
//
// It never talks to the apiserver (dns/watch feeds it), never answers DNS
// (dns/resolve does) and never writes anywhere but its own state dir.
package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

const (
	// Kind is the statefile kind of the snapshot file.
	Kind = "holdfast.dns.snapshot"
	// Version is the newest snapshot schema this binary reads and writes.
	Version = 1
	// FileName is the snapshot's name inside the state dir.
	FileName = "snapshot.json"
)

// Port is a named service or endpoint port.
type Port struct {
	Name     string `json:"name,omitempty"`
	Protocol string `json:"protocol"` // TCP, UDP or SCTP
	Port     int32  `json:"port"`
}

// Service is what DNS needs of a core/v1 Service.
type Service struct {
	Namespace    string   `json:"namespace"`
	Name         string   `json:"name"`
	Type         string   `json:"type,omitempty"` // ClusterIP, NodePort, LoadBalancer, ExternalName
	ClusterIPs   []string `json:"clusterIPs,omitempty"`
	Headless     bool     `json:"headless,omitempty"` // clusterIP: None
	ExternalName string   `json:"externalName,omitempty"`
	Ports        []Port   `json:"ports,omitempty"`
}

// Key is namespace/name.
func (s Service) Key() string { return s.Namespace + "/" + s.Name }

// Endpoint is one endpoint of an EndpointSlice. Nil conditions mean unknown,
// which Kubernetes says to read as ready/serving and not terminating.
type Endpoint struct {
	Addresses   []string `json:"addresses"`
	Hostname    string   `json:"hostname,omitempty"`
	NodeName    string   `json:"nodeName,omitempty"`
	TargetName  string   `json:"targetName,omitempty"` // pod name from targetRef, for logs
	Ready       *bool    `json:"ready,omitempty"`
	Serving     *bool    `json:"serving,omitempty"`
	Terminating *bool    `json:"terminating,omitempty"`
}

// IsReady reads the ready condition (nil = ready).
func (e Endpoint) IsReady() bool { return e.Ready == nil || *e.Ready }

// IsTerminating reads the terminating condition (nil = not terminating).
func (e Endpoint) IsTerminating() bool { return e.Terminating != nil && *e.Terminating }

// EndpointSlice is what DNS needs of a discovery/v1 EndpointSlice.
type EndpointSlice struct {
	Namespace   string     `json:"namespace"`
	Name        string     `json:"name"`
	Service     string     `json:"service"`     // kubernetes.io/service-name label
	AddressType string     `json:"addressType"` // IPv4, IPv6, FQDN
	Ports       []Port     `json:"ports,omitempty"`
	Endpoints   []Endpoint `json:"endpoints,omitempty"`
}

// Key is namespace/name.
func (s EndpointSlice) Key() string { return s.Namespace + "/" + s.Name }

// Snapshot is the persisted payload: every Service and EndpointSlice,
// sorted by key, plus where they came from.
type Snapshot struct {
	Source    string          `json:"source"` // "apiserver", "seed:<path>"
	UpdatedAt time.Time       `json:"updatedAt"`
	Services  []Service       `json:"services"`
	Slices    []EndpointSlice `json:"endpointSlices"`
	// Namespaces known to exist (so <ns>.svc.<zone> is NODATA, not
	// NXDOMAIN, even with no Service in it). Optional: namespaces holding
	// Services exist anyway.
	Namespaces []string `json:"namespaces,omitempty"`
}

// Options configure a Store.
type Options struct {
	Dir      string        // state dir; the snapshot is Dir/snapshot.json
	Debounce time.Duration // wait this long after a change before saving (default 200ms)
	MaxDelay time.Duration // never delay a save longer than this (default 2s)
	Log      *slog.Logger
}

// Store is the in-memory copy and its persistence. Safe for concurrent use.
type Store struct {
	opts Options
	path string
	log  *slog.Logger

	mu       sync.Mutex
	services map[string]Service
	slices   map[string]EndpointSlice
	nss      map[string]bool
	source   string
	updated  time.Time
	gen      uint64
	view     *Snapshot // cached sorted view for gen
	viewGen  uint64
	savedGen uint64
	refused  bool // the file on disk was refused; move it aside before the first save
	subs     []chan struct{}

	timer      *time.Timer
	firstDirty time.Time
	saveErr    error
	closed     bool
}

// Open builds a Store over dir and loads its snapshot. A missing snapshot
// gives an empty store and a nil error. A corrupt or future-version snapshot
// is refused: the store starts empty, the file is left in place until the
// first save moves it aside (to snapshot.json.refused), and the returned error
// says why. The Store is usable in every case.
func Open(opts Options) (*Store, error) {
	if opts.Debounce <= 0 {
		opts.Debounce = 200 * time.Millisecond
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = 2 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		opts:     opts,
		path:     filepath.Join(opts.Dir, FileName),
		log:      opts.Log,
		services: map[string]Service{},
		slices:   map[string]EndpointSlice{},
		nss:      map[string]bool{},
	}
	// Open is the daemon's start, before its first save: temp files here
	// are a killed daemon's leftovers.
	if _, err := atomicfile.CleanTemps(s.path); err != nil {
		s.log.Warn("remove leftover temp files", "path", s.path, "err", err)
	}
	snap, err := LoadFile(s.path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return s, nil
		}
		s.refused = true
		return s, err
	}
	s.replaceLocked(snap)
	s.savedGen = s.gen
	if sorted(snap) {
		// Saved views are sorted: serve the loaded one as is, sparing the
		// first index build a copy and sort on the start-up path.
		s.view, s.viewGen = snap, s.gen
	}
	return s, nil
}

// sorted reports whether services and slices are in strictly increasing
// key order (so also free of duplicates), as View returns them.
func sorted(snap *Snapshot) bool {
	for i := 1; i < len(snap.Services); i++ {
		if snap.Services[i-1].Key() >= snap.Services[i].Key() {
			return false
		}
	}
	for i := 1; i < len(snap.Slices); i++ {
		if snap.Slices[i-1].Key() >= snap.Slices[i].Key() {
			return false
		}
	}
	return sort.StringsAreSorted(snap.Namespaces) && len(slices.Compact(slices.Clone(snap.Namespaces))) == len(snap.Namespaces)
}

// LoadFile reads and checks a snapshot file.
func LoadFile(path string) (*Snapshot, error) {
	var snap Snapshot
	if _, err := statefile.Load(path, Kind, Version, &snap); err != nil {
		return nil, err
	}
	for i, svc := range snap.Services {
		if svc.Namespace == "" || svc.Name == "" {
			return nil, fmt.Errorf("%s: service %d has no namespace or name", path, i)
		}
	}
	for i, sl := range snap.Slices {
		if sl.Namespace == "" || sl.Name == "" {
			return nil, fmt.Errorf("%s: endpointslice %d has no namespace or name", path, i)
		}
	}
	return &snap, nil
}

// Path is the snapshot file's path.
func (s *Store) Path() string { return s.path }

// Empty reports whether the store holds nothing.
func (s *Store) Empty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.services) == 0 && len(s.slices) == 0 && len(s.nss) == 0
}

// Subscribe returns a channel that receives (coalesced) after every change.
func (s *Store) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs = append(s.subs, ch)
	s.mu.Unlock()
	return ch
}

// Generation counts changes since Open.
func (s *Store) Generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// View returns an immutable sorted snapshot of the current content. Callers
// must not modify it.
func (s *Store) View() *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.viewLocked()
}

func (s *Store) viewLocked() *Snapshot {
	if s.view != nil && s.viewGen == s.gen {
		return s.view
	}
	v := &Snapshot{Source: s.source, UpdatedAt: s.updated,
		Services: make([]Service, 0, len(s.services)), Slices: make([]EndpointSlice, 0, len(s.slices))}
	for _, svc := range s.services {
		v.Services = append(v.Services, svc)
	}
	for _, sl := range s.slices {
		v.Slices = append(v.Slices, sl)
	}
	for ns := range s.nss {
		v.Namespaces = append(v.Namespaces, ns)
	}
	sort.Strings(v.Namespaces)
	sort.Slice(v.Services, func(i, j int) bool { return v.Services[i].Key() < v.Services[j].Key() })
	sort.Slice(v.Slices, func(i, j int) bool { return v.Slices[i].Key() < v.Slices[j].Key() })
	s.view, s.viewGen = v, s.gen
	return v
}

// SetService adds or replaces a Service.
func (s *Store) SetService(svc Service) {
	s.mutate("apiserver", func() { s.services[svc.Key()] = svc })
}

// DeleteService removes a Service.
func (s *Store) DeleteService(namespace, name string) {
	s.mutate("apiserver", func() { delete(s.services, namespace+"/"+name) })
}

// SetSlice adds or replaces an EndpointSlice.
func (s *Store) SetSlice(sl EndpointSlice) { s.mutate("apiserver", func() { s.slices[sl.Key()] = sl }) }

// DeleteSlice removes an EndpointSlice.
func (s *Store) DeleteSlice(namespace, name string) {
	s.mutate("apiserver", func() { delete(s.slices, namespace+"/"+name) })
}

// SetNamespace records that a namespace exists.
func (s *Store) SetNamespace(name string) { s.mutate("apiserver", func() { s.nss[name] = true }) }

// DeleteNamespace forgets a namespace.
func (s *Store) DeleteNamespace(name string) { s.mutate("apiserver", func() { delete(s.nss, name) }) }

// Replace swaps the whole content (an informer relist or a seed file).
func (s *Store) Replace(snap *Snapshot) {
	s.mu.Lock()
	s.replaceLocked(snap)
	s.changedLocked()
	s.mu.Unlock()
}

func (s *Store) replaceLocked(snap *Snapshot) {
	s.services = make(map[string]Service, len(snap.Services))
	s.slices = make(map[string]EndpointSlice, len(snap.Slices))
	s.nss = make(map[string]bool, len(snap.Namespaces))
	for _, ns := range snap.Namespaces {
		s.nss[ns] = true
	}
	for _, svc := range snap.Services {
		s.services[svc.Key()] = svc
	}
	for _, sl := range snap.Slices {
		s.slices[sl.Key()] = sl
	}
	s.source = snap.Source
	s.updated = snap.UpdatedAt
	s.gen++
}

func (s *Store) mutate(source string, f func()) {
	s.mu.Lock()
	f()
	s.source = source
	s.updated = time.Now().UTC()
	s.gen++
	s.changedLocked()
	s.mu.Unlock()
}

// changedLocked notifies subscribers and schedules a debounced save.
func (s *Store) changedLocked() {
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	if s.closed {
		return
	}
	now := time.Now()
	if s.timer == nil {
		s.firstDirty = now
		s.timer = time.AfterFunc(s.opts.Debounce, s.saveFromTimer)
		return
	}
	delay := s.opts.Debounce
	if rest := s.opts.MaxDelay - now.Sub(s.firstDirty); rest < delay {
		delay = max(rest, 0)
	}
	s.timer.Reset(delay)
}

func (s *Store) saveFromTimer() {
	if err := s.Flush(); err != nil {
		s.log.Error("save dns snapshot", "path", s.path, "err", err)
	}
}

// Flush saves now if anything changed since the last save.
func (s *Store) Flush() error {
	s.mu.Lock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if s.gen == s.savedGen {
		s.mu.Unlock()
		return nil
	}
	view, gen, refused := s.viewLocked(), s.gen, s.refused
	s.mu.Unlock()

	if refused {
		aside := s.path + ".refused"
		if err := os.Rename(s.path, aside); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("move refused snapshot aside: %w", err)
		}
		s.log.Warn("moved refused dns snapshot aside", "path", aside)
	}
	err := statefile.Save(s.path, Kind, Version, view)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saveErr = err
	if err == nil {
		s.refused = false
		if gen > s.savedGen {
			s.savedGen = gen
		}
		s.log.Debug("saved dns snapshot", "path", s.path, "services", len(view.Services), "endpointslices", len(view.Slices))
	}
	return err
}

// SaveErr is the error of the last save attempt (nil after a success).
func (s *Store) SaveErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saveErr
}

// Close flushes pending changes and stops scheduling saves.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return s.Flush()
}
