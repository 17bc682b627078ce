// Package store is holdfast-ipam's one crash-safe store: per network, a
// single statefile snapshot (kind "holdfast-ipam/state") of every allocation
// and pin, rewritten atomically (temp file, fsync, rename) while an
// exclusive flock on the network's lock file is held; a Durable save
// fsyncs the directory too, right after the lock is released. A SIGKILL at any
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
	"time"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/flock"
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
var ErrLockTimeout = flock.ErrTimeout

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
	// syncDir: a Durable Save renamed the state file; Unlock fsyncs the
	// directory.
	syncDir bool
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
	f, err := flock.Lock(filepath.Join(d.Dir, LockFileName), d.LockTimeout)
	if err != nil {
		return err
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

// Unlock releases the lock, then, after a Durable Save, fsyncs the
// directory so the new state is on disk when Unlock returns. Its error
// must be checked: a failed directory fsync means the save may not be
// durable.
func (d *Disk) Unlock() error {
	if d.lockFile == nil {
		return nil
	}
	err := d.lockFile.Close() // closing drops the flock
	d.lockFile = nil
	if d.syncDir {
		d.syncDir = false
		if serr := atomicfile.SyncDir(d.Dir); serr != nil {
			return serr
		}
	}
	if err != nil {
		return fmt.Errorf("release lock of %s: %w", d.Dir, err)
	}
	return nil
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

// Durability says how soon a Save survives a power loss. Either way the
// state file is fsynced before its rename, so it is never torn, and a
// killed plugin leaves the old state or the new one.
type Durability int

const (
	// Durable: the directory is fsynced too, so the new state is on disk
	// before Save returns (ADD: the pod's pin must survive a power loss).
	// The directory fsync runs in Unlock, after the lock is released, so
	// plugins waiting for the lock do not queue behind it.
	Durable Durability = iota
	// Deferred: no directory fsync; the rename reaches the disk with the
	// filesystem's next commit (ext4: within 5 s), so a power loss may
	// bring back the state of just before. Only for releases (DEL, GC):
	// losing one looks like a power loss just before the DEL, which the
	// allocator already handles (the same pod takes over an allocation
	// whose netns is gone; GC releases the rest).
	Deferred
)

// Save atomically replaces the state file. The caller must hold the lock.
func (d *Disk) Save(st *State, dur Durability) error {
	if d.lockFile == nil {
		return errors.New("store: Save without the lock")
	}
	data, err := statefile.Encode(Kind, Version, st)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFileNoDirSync(d.StatePath(), data, 0o600); err != nil {
		return err
	}
	if dur == Durable {
		d.syncDir = true
	}
	return nil
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
