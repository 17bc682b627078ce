// Package store is holdfast-ipam's one crash-safe store: per network, a
// single statefile snapshot (kind "holdfast-ipam/state") of every allocation
// and pin, rewritten atomically (temp file, fsync, rename, fsync dir) while
// an exclusive flock on the network's lock file is held. A SIGKILL at any
// instruction leaves either the previous snapshot or the new one, never a
// torn mix; the lock serialises every plugin process on the node.
//
// It owns <dataDir>/<network>/state.json and <dataDir>/<network>/lock and
// nothing else. It never decides policy (which address, which pin): that is
// the allocator's job.
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

// Kind and Version of the state file envelope.
const (
	Kind    = "holdfast-ipam/state"
	Version = 1
)

// StateFileName and LockFileName are the store's files in a network dir.
const (
	StateFileName = "state.json"
	LockFileName  = "lock"
)

// DefaultLockTimeout bounds how long a plugin waits for another one.
const DefaultLockTimeout = 30 * time.Second

// ErrLockTimeout is returned (wrapped) when the lock is not obtained in time.
var ErrLockTimeout = errors.New("timed out waiting for the store lock")

// ErrCorrupt is returned (wrapped) when the state file cannot be used: torn,
// bad checksum, other kind, a newer schema version, trailing data, or
// content that makes no sense (State.Validate).
var ErrCorrupt = errors.New("state file unusable")

// Allocation is one address held by one container interface.
type Allocation struct {
	IP          string    `json:"ip"`
	RangeSet    int       `json:"rangeSet"`
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifName"`
	PinKey      string    `json:"pinKey,omitempty"`
	Netns       string    `json:"netns,omitempty"`
	Since       time.Time `json:"since"`
	// HostLocal is the host-local reservation file (<dataDir>/<network>/<ip>,
	// an on-node path) that mirrors this allocation, so the two IPAMs never
	// hand the address out twice while a node moves between them.
	HostLocal string `json:"hostLocal,omitempty"`
	// Imported: install took the allocation over from host-local. The pod's
	// DEL still goes to host-local (flannel replays the delegate config it
	// saved at ADD), so the allocation is released once HostLocal no longer
	// names the container. Otherwise (hand-back at uninstall) holdfast-ipam
	// owns the address and removes HostLocal when it releases it.
	Imported bool `json:"imported,omitempty"`
}

// Pin binds a pod interface (network/namespace/name/ifname) to addresses,
// one per range set. ContainerID is empty while the pin is released.
type Pin struct {
	Key         string    `json:"key"`
	Namespace   string    `json:"namespace"`
	Name        string    `json:"name"`
	IfName      string    `json:"ifName"`
	IPs         []string  `json:"ips"`
	ContainerID string    `json:"containerID,omitempty"`
	LastUsed    time.Time `json:"lastUsed"`
}

// State is everything the store keeps for one network.
type State struct {
	Network      string                 `json:"network"`
	Allocations  map[string]*Allocation `json:"allocations"`  // by IP
	Pins         map[string]*Pin        `json:"pins"`         // by pin key
	LastReserved map[int]string         `json:"lastReserved"` // by range set index
}

// NewState returns an empty state for network.
func NewState(network string) *State {
	return &State{Network: network, Allocations: map[string]*Allocation{}, Pins: map[string]*Pin{}, LastReserved: map[int]string{}}
}

func (s *State) normalize() {
	if s.Allocations == nil {
		s.Allocations = map[string]*Allocation{}
	}
	if s.Pins == nil {
		s.Pins = map[string]*Pin{}
	}
	if s.LastReserved == nil {
		s.LastReserved = map[int]string{}
	}
}

// SortedAllocations returns the allocations ordered by IP text.
func (s *State) SortedAllocations() []*Allocation {
	out := make([]*Allocation, 0, len(s.Allocations))
	for _, a := range s.Allocations {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP < out[j].IP })
	return out
}

// SortedPins returns the pins ordered by key.
func (s *State) SortedPins() []*Pin {
	out := make([]*Pin, 0, len(s.Pins))
	for _, p := range s.Pins {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Disk is the store of one network on disk.
type Disk struct {
	Dir         string
	Network     string
	LockTimeout time.Duration
	lockFile    *os.File
}

// New returns the store of network under dataDir. Nothing is created until
// Lock or Save.
func New(dataDir, network string) *Disk {
	return &Disk{Dir: filepath.Join(dataDir, network), Network: network, LockTimeout: DefaultLockTimeout}
}

// StatePath is the path of the state file.
func (d *Disk) StatePath() string { return filepath.Join(d.Dir, StateFileName) }

// Lock takes the network's exclusive lock, waiting up to LockTimeout, and
// removes the temp files of writers killed before their rename.
func (d *Disk) Lock() error {
	if d.lockFile != nil {
		return errors.New("store: lock already held by this process")
	}
	if err := os.MkdirAll(d.Dir, 0o755); err != nil {
		return fmt.Errorf("create store dir %s: %w", d.Dir, err)
	}
	path := filepath.Join(d.Dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := flockTimeout(f, d.LockTimeout); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	d.lockFile = f
	// Temp files of writers killed before their rename are garbage; only
	// a holder of this lock may write here, so none of them is live.
	if _, err := atomicfile.CleanTemps(d.StatePath()); err != nil {
		d.Unlock()
		return err
	}
	return nil
}

// flockTimeout takes an exclusive flock on f, blocking (so waiters are
// served in the kernel's order, with no polling delay) for at most timeout.
// On timeout the blocked flock is abandoned: if it succeeds later the
// helper releases it at once.
func flockTimeout(f *os.File, timeout time.Duration) error {
	fd := int(f.Fd())
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err == nil {
		return nil
	} else if !errors.Is(err, unix.EWOULDBLOCK) {
		return fmt.Errorf("flock: %w", err)
	}
	var (
		mu                  sync.Mutex
		acquired, abandoned bool
	)
	dup, err := unix.Dup(fd) // the helper owns its own descriptor of the open file
	if err != nil {
		return fmt.Errorf("dup lock fd: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		var err error
		for {
			if err = unix.Flock(dup, unix.LOCK_EX); !errors.Is(err, unix.EINTR) {
				break
			}
		}
		mu.Lock()
		if abandoned && err == nil {
			unix.Flock(dup, unix.LOCK_UN)
		}
		acquired = err == nil && !abandoned
		mu.Unlock()
		unix.Close(dup)
		done <- err
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("flock: %w", err)
		}
		return nil
	case <-timer.C:
		mu.Lock()
		defer mu.Unlock()
		if acquired {
			return nil
		}
		abandoned = true
		return fmt.Errorf("%w after %s", ErrLockTimeout, timeout)
	}
}

// Unlock releases the lock.
func (d *Disk) Unlock() error {
	if d.lockFile == nil {
		return nil
	}
	err := d.lockFile.Close() // closing drops the flock
	d.lockFile = nil
	return err
}

// Load reads the state; a missing file is an empty state. Callers that
// modify state must hold the lock.
func (d *Disk) Load() (*State, error) {
	st := NewState(d.Network)
	if _, err := statefile.Load(d.StatePath(), Kind, Version, st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return NewState(d.Network), nil
		}
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	st.normalize()
	if st.Network != d.Network {
		return nil, fmt.Errorf("%w: %s holds network %q, want %q", ErrCorrupt, d.StatePath(), st.Network, d.Network)
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, d.StatePath(), err)
	}
	return st, nil
}

// Save atomically replaces the state file. The caller must hold the lock.
func (d *Disk) Save(st *State) error {
	if d.lockFile == nil {
		return errors.New("store: Save without the lock")
	}
	return statefile.Save(d.StatePath(), Kind, Version, st)
}

// ListNetworks returns the network names that have a state file in dataDir.
func ListNetworks(dataDir string) ([]string, error) {
	ents, err := os.ReadDir(dataDir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dataDir, e.Name(), StateFileName)); err == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
