// Package record is the CRI shim's durable memory: one versioned, checksummed
// file per pod UID under the state directory, holding the pod's
// RunPodSandboxRequest (with its runtime handler), every container's latest
// CreateContainerRequest, the order in which containers were started, the
// last known state of each, the pod facts kubelet does not put into CRI, and
// the outcome of the last relaunch.
//
// It owns <state-dir>/pods/*.json and <state-dir>/boot.json and nothing
// else. It never talks to containerd or kubelet, never reads volume
// contents: a recorded config holds host paths, not the files behind them
// (cri-shim/volumes captures those apart).
//
// Writes on kubelet's call path cost exactly one fsync (the new file's); the
// rename that publishes it is made durable by a coalescing directory fsync
// in the background (Store.Flush), so a crash leaves either the old or the
// new record, never a torn one.
package record

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

// DefaultDir is holdfastd cri's state directory (the records).
const DefaultDir = "/var/lib/holdfast/cri"

const (
	// PodKind and PodVersion identify a pod record file.
	PodKind    = "holdfast.cri.pod"
	PodVersion = 1
	// BootKind and BootVersion identify the boot marker file.
	BootKind    = "holdfast.cri.boot"
	BootVersion = 1
)

// Container states as recorded.
const (
	StateCreated = "created"
	StateRunning = "running"
	StateExited  = "exited"
	StateStopped = "stopped" // stopped by kubelet (StopContainer)
	StateRemoved = "removed"
)

// Relaunch outcomes.
const (
	OutcomeRelaunching = "relaunching" // sandbox created, containers starting
	OutcomeRelaunched  = "relaunched"
	OutcomeFailed      = "failed"
	OutcomeSkipped     = "skipped"
	OutcomeAdopted     = "adopted"
)

// Restart policies (mirror v1.RestartPolicy).
const (
	RestartAlways    = "Always"
	RestartOnFailure = "OnFailure"
	RestartNever     = "Never"
)

// Sandbox is one sandbox kubelet (or the shim) created for the pod.
type Sandbox struct {
	ID      string    `json:"id"`
	Attempt uint32    `json:"attempt"`
	BootID  string    `json:"bootID"`
	Created time.Time `json:"created"`
	Stopped bool      `json:"stopped,omitempty"` // kubelet called StopPodSandbox
}

// Container is the latest instance of one named container of the pod.
type Container struct {
	Name string `json:"name"`
	// Request is the CreateContainerRequest as protojson.
	Request   json.RawMessage `json:"request"`
	ID        string          `json:"id,omitempty"`
	SandboxID string          `json:"sandboxID,omitempty"`
	Attempt   uint32          `json:"attempt"`
	// CreateSeq orders container creation within the pod; StartSeq the
	// starts (0: never started).
	CreateSeq int    `json:"createSeq"`
	StartSeq  int    `json:"startSeq,omitempty"`
	State     string `json:"state"`
	ExitCode  int32  `json:"exitCode,omitempty"`
	// Init is true when the container is known (facts) or inferred (it had
	// exited 0 before the next container was created) to be an init container.
	Init bool `json:"init,omitempty"`
}

// Facts are what kubelet does not put into CRI.
type Facts struct {
	// Source is "apiserver" when read from the Pod object, "inferred" otherwise.
	Source         string    `json:"source"`
	RestartPolicy  string    `json:"restartPolicy"`
	InitContainers []string  `json:"initContainers,omitempty"`
	OwnerKind      string    `json:"ownerKind,omitempty"`
	OwnerName      string    `json:"ownerName,omitempty"`
	Fetched        time.Time `json:"fetched,omitempty"`
}

// Relaunch is the outcome of the last relaunch of the pod.
type Relaunch struct {
	BootID    string `json:"bootID"`
	Outcome   string `json:"outcome"`
	Error     string `json:"error,omitempty"`
	SandboxID string `json:"sandboxID,omitempty"`
	// Containers maps container name → container ID started by the relaunch
	// (or by the shim's restarts after it) in this boot.
	Containers map[string]string `json:"containers,omitempty"`
	At         time.Time         `json:"at"`
	// Adopted is set once kubelet issued a mutating call for the pod after
	// the relaunch; the shim then stops restarting its containers.
	Adopted bool `json:"adopted,omitempty"`
}

// Pod is the record of one pod UID.
type Pod struct {
	UID       string `json:"uid"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Sandbox is the latest RunPodSandboxRequest as protojson.
	Sandbox        json.RawMessage       `json:"sandbox"`
	RuntimeHandler string                `json:"runtimeHandler,omitempty"`
	Sandboxes      []Sandbox             `json:"sandboxes"`
	Containers     map[string]*Container `json:"containers"`
	NextSeq        int                   `json:"nextSeq"`
	Facts          *Facts                `json:"facts,omitempty"`
	Relaunch       *Relaunch             `json:"relaunch,omitempty"`
	Updated        time.Time             `json:"updated"`
}

// Key returns namespace/name.
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// SandboxRequest decodes the recorded RunPodSandboxRequest.
func (p *Pod) SandboxRequest() (*runtimeapi.RunPodSandboxRequest, error) {
	req := &runtimeapi.RunPodSandboxRequest{}
	if err := protojson.Unmarshal(p.Sandbox, req); err != nil {
		return nil, fmt.Errorf("pod %s: decode recorded RunPodSandboxRequest: %w", p.Key(), err)
	}
	if req.GetConfig().GetMetadata() == nil {
		return nil, fmt.Errorf("pod %s: recorded RunPodSandboxRequest has no metadata", p.Key())
	}
	return req, nil
}

// ContainerRequest decodes a recorded CreateContainerRequest.
func (c *Container) ContainerRequest() (*runtimeapi.CreateContainerRequest, error) {
	req := &runtimeapi.CreateContainerRequest{}
	if err := protojson.Unmarshal(c.Request, req); err != nil {
		return nil, fmt.Errorf("container %s: decode recorded CreateContainerRequest: %w", c.Name, err)
	}
	if req.GetConfig().GetMetadata() == nil {
		return nil, fmt.Errorf("container %s: recorded CreateContainerRequest has no metadata", c.Name)
	}
	return req, nil
}

// LatestSandbox returns the sandbox with the highest attempt, or nil.
func (p *Pod) LatestSandbox() *Sandbox {
	var best *Sandbox
	for i := range p.Sandboxes {
		s := &p.Sandboxes[i]
		if best == nil || s.Attempt > best.Attempt || (s.Attempt == best.Attempt && s.Created.After(best.Created)) {
			best = s
		}
	}
	return best
}

// Ordered returns the containers in creation order.
func (p *Pod) Ordered() []*Container {
	out := make([]*Container, 0, len(p.Containers))
	for _, c := range p.Containers {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreateSeq < out[j].CreateSeq })
	return out
}

// Clone returns a deep copy.
func (p *Pod) Clone() *Pod {
	data, err := json.Marshal(p)
	if err != nil {
		panic(fmt.Sprintf("record: clone pod %s: %v", p.UID, err))
	}
	out := &Pod{}
	if err := json.Unmarshal(data, out); err != nil {
		panic(fmt.Sprintf("record: clone pod %s: %v", p.UID, err))
	}
	return out
}

// MarshalProto renders a CRI message as the protojson a record stores.
func MarshalProto(m proto.Message) (json.RawMessage, error) {
	return protojson.Marshal(m)
}

// ValidUID reports whether uid is safe as a file name.
func ValidUID(uid string) error {
	if uid == "" {
		return fmt.Errorf("empty pod UID")
	}
	if len(uid) > 128 || strings.ContainsAny(uid, "/\\\x00") || uid == "." || uid == ".." || strings.HasPrefix(uid, ".") {
		return fmt.Errorf("pod UID %q is not usable as a record name", uid)
	}
	return nil
}

// LoadError is a record file that could not be read.
type LoadError struct {
	Path string
	Err  error
}

func (e LoadError) Error() string { return e.Err.Error() }

// Store holds every pod record in memory and on disk.
type Store struct {
	dir      string
	readOnly bool

	mu      sync.Mutex
	pods    map[string]*Pod
	sandbox map[string]string // sandbox ID → UID
	ctr     map[string]string // container ID → UID
	podMu   map[string]*sync.Mutex

	dirty   chan struct{}
	flushMu sync.Mutex
}

// Open loads every record in dir (creating it 0700). Records that fail to
// load are returned as LoadErrors and left on disk untouched; the rest are
// usable.
func Open(dir string) (*Store, []LoadError, error) {
	pd := filepath.Join(dir, "pods")
	if err := os.MkdirAll(pd, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create record dir %s: %w", pd, err)
	}
	// The shim is the only writer and has not started writing: what temp
	// files are here are the leftovers of a killed shim.
	if _, err := atomicfile.CleanTemps(filepath.Join(pd, "*.json")); err != nil {
		return nil, nil, err
	}
	if _, err := atomicfile.CleanTemps(filepath.Join(dir, "boot.json")); err != nil {
		return nil, nil, err
	}
	return load(dir, false)
}

// Inspect loads the records for reading only (e.g. `holdfastd cri pods`
// while the shim runs): it creates and cleans nothing, and Update refuses.
func Inspect(dir string) (*Store, []LoadError, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, nil, fmt.Errorf("state dir: %w", err)
	}
	return load(dir, true)
}

func load(dir string, readOnly bool) (*Store, []LoadError, error) {
	pd := filepath.Join(dir, "pods")
	s := &Store{dir: dir, readOnly: readOnly, pods: map[string]*Pod{}, sandbox: map[string]string{}, ctr: map[string]string{}, podMu: map[string]*sync.Mutex{}, dirty: make(chan struct{}, 1)}
	ents, err := os.ReadDir(pd)
	if err != nil && readOnly && os.IsNotExist(err) {
		return s, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read record dir %s: %w", pd, err)
	}
	var bad []LoadError
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(pd, e.Name())
		p := &Pod{}
		if _, err := statefile.Load(path, PodKind, PodVersion, p); err != nil {
			bad = append(bad, LoadError{Path: path, Err: err})
			continue
		}
		if p.UID+".json" != e.Name() {
			bad = append(bad, LoadError{Path: path, Err: fmt.Errorf("%s: holds pod UID %q, not the one its name says", path, p.UID)})
			continue
		}
		if p.Containers == nil {
			p.Containers = map[string]*Container{}
		}
		s.index(p)
	}
	return s, bad, nil
}

// Dir returns the state directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(uid string) string { return filepath.Join(s.dir, "pods", uid+".json") }

func (s *Store) index(p *Pod) {
	s.pods[p.UID] = p
	for _, sb := range p.Sandboxes {
		s.sandbox[sb.ID] = p.UID
	}
	for _, c := range p.Containers {
		if c.ID != "" {
			s.ctr[c.ID] = p.UID
		}
	}
}

func (s *Store) unindex(p *Pod) {
	for _, sb := range p.Sandboxes {
		if s.sandbox[sb.ID] == p.UID {
			delete(s.sandbox, sb.ID)
		}
	}
	for _, c := range p.Containers {
		if s.ctr[c.ID] == p.UID {
			delete(s.ctr, c.ID)
		}
	}
}

// UIDForSandbox returns the pod UID owning a sandbox ID.
func (s *Store) UIDForSandbox(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	uid, ok := s.sandbox[id]
	return uid, ok
}

// UIDForContainer returns the pod UID owning a container ID.
func (s *Store) UIDForContainer(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	uid, ok := s.ctr[id]
	return uid, ok
}

// Has reports whether the pod has a record (without copying it).
func (s *Store) Has(uid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.pods[uid]
	return ok
}

// Get returns a copy of the pod record.
func (s *Store) Get(uid string) (*Pod, bool) {
	s.mu.Lock()
	p, ok := s.pods[uid]
	s.mu.Unlock()
	if !ok {
		return nil, false
	}
	l := s.lock(uid)
	defer l.Unlock()
	return p.Clone(), true
}

// List returns copies of every record, sorted by namespace/name.
func (s *Store) List() []*Pod {
	s.mu.Lock()
	uids := make([]string, 0, len(s.pods))
	for uid := range s.pods {
		uids = append(uids, uid)
	}
	s.mu.Unlock()
	var out []*Pod
	for _, uid := range uids {
		if p, ok := s.Get(uid); ok {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Select returns copies of the records keep reports true for, sorted by
// namespace/name like List. keep runs on the stored records themselves,
// under the store's lock, so that records it rejects are never copied: it
// must be quick, must not modify the record, must not retain it or
// anything it points to, and must not call the Store.
func (s *Store) Select(keep func(*Pod) bool) []*Pod {
	s.mu.Lock()
	var kept []*Pod
	for _, p := range s.pods {
		if keep(p) {
			kept = append(kept, p)
		}
	}
	s.mu.Unlock()
	// A stored record is never modified: Update works on a copy and
	// replaces the stored one, so the kept ones can be copied unlocked.
	out := make([]*Pod, 0, len(kept))
	for _, p := range kept {
		out = append(out, p.Clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Len returns the number of records (without copying them).
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pods)
}

func (s *Store) lock(uid string) *sync.Mutex {
	s.mu.Lock()
	l, ok := s.podMu[uid]
	if !ok {
		l = &sync.Mutex{}
		s.podMu[uid] = l
	}
	s.mu.Unlock()
	l.Lock()
	return l
}

// Update runs fn on the pod's record (a fresh one if none exists, with
// create=true) under the pod's lock and writes the result. fn returns
// whether anything changed; returning an error aborts with no change.
// A record left with no sandbox is deleted.
func (s *Store) Update(uid string, create bool, fn func(p *Pod) (bool, error)) error {
	return s.update(uid, create, true, fn)
}

// UpdateVolatile is Update for intermediate states: the change is visible
// at once to this process but reaches the disk only with the pod's next
// Update. Only for steps whose loss in a crash is harmless (a relaunch
// records its sandbox with Update first, then its containers volatilely,
// then the outcome with Update).
func (s *Store) UpdateVolatile(uid string, fn func(p *Pod) (bool, error)) error {
	return s.update(uid, false, false, fn)
}

func (s *Store) update(uid string, create, durable bool, fn func(p *Pod) (bool, error)) error {
	if err := ValidUID(uid); err != nil {
		return err
	}
	if s.readOnly {
		return fmt.Errorf("record store %s opened read-only", s.dir)
	}
	l := s.lock(uid)
	defer l.Unlock()
	s.mu.Lock()
	cur, ok := s.pods[uid]
	s.mu.Unlock()
	var work *Pod
	switch {
	case ok:
		work = cur.Clone()
	case create:
		work = &Pod{UID: uid, Containers: map[string]*Container{}}
	default:
		return nil
	}
	changed, err := fn(work)
	if err != nil || !changed {
		return err
	}
	if len(work.Sandboxes) == 0 {
		if !ok {
			return nil
		}
		if err := os.Remove(s.path(uid)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove record of pod %s: %w", work.Key(), err)
		}
		s.mu.Lock()
		s.unindex(cur)
		delete(s.pods, uid)
		s.mu.Unlock()
		s.markDirty()
		return nil
	}
	work.Updated = time.Now().UTC()
	if durable {
		if err := s.write(work); err != nil {
			return err
		}
	}
	s.mu.Lock()
	if ok {
		s.unindex(cur)
	}
	s.index(work)
	s.mu.Unlock()
	return nil
}

// write publishes the record with one fsync (of the new file); the directory
// fsync that makes the rename durable is left to Flush.
func (s *Store) write(p *Pod) error {
	data, err := statefile.Encode(PodKind, PodVersion, p)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFileNoDirSync(s.path(p.UID), data, 0o600); err != nil {
		return fmt.Errorf("record pod %s: %w", p.Key(), err)
	}
	s.markDirty()
	return nil
}

func (s *Store) markDirty() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// Dirty is signalled after a write whose directory entry is not yet durable.
func (s *Store) Dirty() <-chan struct{} { return s.dirty }

// Flush fsyncs the record directory, making every published rename and
// removal durable.
func (s *Store) Flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	return atomicfile.SyncDir(filepath.Join(s.dir, "pods"))
}

// Boot is the boot marker: the boot id the shim last ran under.
type Boot struct {
	BootID string    `json:"bootID"`
	Seen   time.Time `json:"seen"`
}

// LoadBoot returns the recorded boot id ("" when none is recorded).
func (s *Store) LoadBoot() (Boot, error) {
	var b Boot
	_, err := statefile.Load(filepath.Join(s.dir, "boot.json"), BootKind, BootVersion, &b)
	if os.IsNotExist(err) {
		return Boot{}, nil
	}
	return b, err
}

// SaveBoot records the current boot id.
func (s *Store) SaveBoot(id string) error {
	return statefile.Save(filepath.Join(s.dir, "boot.json"), BootKind, BootVersion, Boot{BootID: id, Seen: time.Now().UTC()})
}

// ReadBootID reads a boot id file (like /proc/sys/kernel/random/boot_id).
func ReadBootID(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	id := strings.TrimSpace(string(data))
	if id == "" {
		return "", fmt.Errorf("boot id file %s is empty", path)
	}
	return id, nil
}
