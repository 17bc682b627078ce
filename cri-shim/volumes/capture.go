package volumes

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// DefaultScanInterval is how often the shim rescans captured volumes for
// changes kubelet made (Secret updates, token rotation about hourly).
const DefaultScanInterval = 30 * time.Second

// Capturer keeps the captures of the tracked pods current and restores
// them. It is the capture directory's one writer.
type Capturer struct {
	store     *Store
	sealer    Sealer // nil: sensitive content is withheld
	mountInfo string
	log       *slog.Logger
	now       func() time.Time

	mu   sync.Mutex
	pods map[string]*podState
}

type podState struct {
	key    string
	optOut bool
	refs   []Ref
	file   *PodFile // as on disk; nil: none yet
}

// CapturerConfig configures NewCapturer.
type CapturerConfig struct {
	Store *Store
	// Sealer seals Secret and projected content; nil withholds it (only
	// the mount options are captured).
	Sealer Sealer
	// MountInfo is the mount table to read (MountInfo).
	MountInfo string
	Log       *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// NewCapturer loads the capture files. Unreadable ones are returned (and
// left on disk); their pods restore no content.
func NewCapturer(cfg CapturerConfig) (*Capturer, []BadFile, error) {
	if cfg.Store == nil || cfg.MountInfo == "" || cfg.Log == nil {
		return nil, nil, errors.New("volume capturer: store, mount table and log are required")
	}
	c := &Capturer{store: cfg.Store, sealer: cfg.Sealer, mountInfo: cfg.MountInfo, log: cfg.Log, now: cfg.Now, pods: map[string]*podState{}}
	if c.now == nil {
		c.now = time.Now
	}
	files, bad, err := cfg.Store.Load()
	if err != nil {
		return nil, nil, err
	}
	for _, f := range files {
		c.pods[f.UID] = &podState{key: f.Pod, optOut: f.OptOut, file: f}
	}
	return c, bad, nil
}

// Track adds volumes of a pod to capture (refs are merged with those known).
// It reports whether anything new was learnt.
func (c *Capturer) Track(uid, key string, optOut bool, refs []Ref) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps, ok := c.pods[uid]
	if !ok {
		ps = &podState{}
		c.pods[uid] = ps
	}
	changed := !ok || ps.key != key || ps.optOut != optOut
	ps.key, ps.optOut = key, optOut
	for _, r := range refs {
		if !slices.Contains(ps.refs, r) {
			ps.refs = append(ps.refs, r)
			changed = true
		}
	}
	return changed
}

// Tracked returns the UIDs tracked.
func (c *Capturer) Tracked() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.pods))
	for uid := range c.pods {
		out = append(out, uid)
	}
	slices.Sort(out)
	return out
}

// Forget drops a pod and its capture file (kubelet removed the pod).
func (c *Capturer) Forget(uid string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pods, uid)
	return c.store.Remove(uid)
}

// Captured counts the volumes captured with content.
func (c *Capturer) Captured() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ps := range c.pods {
		if ps.file != nil {
			for _, v := range ps.file.Volumes {
				if v.Entries != nil || v.Sealed != nil {
					n++
				}
			}
		}
	}
	return n
}

// Scan captures what changed in the volumes of the given pods (every
// tracked pod when uids is empty): one read of the mount table, then per
// volume one readlink of ..data when nothing changed. A volume that is not
// a tmpfs now (not set up yet, or wiped by a reboot and not yet restored)
// keeps its last capture. It returns how many capture files it wrote.
func (c *Capturer) Scan(uids ...string) (int, error) {
	mounts, err := ReadMounts(c.mountInfo)
	if err != nil {
		return 0, err
	}
	if len(uids) == 0 {
		uids = c.Tracked()
	}
	written := 0
	var errs []error
	for _, uid := range uids {
		wrote, err := c.scanPod(mounts, uid)
		if wrote {
			written++
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return written, errors.Join(errs...)
}

func (c *Capturer) scanPod(mounts Mounts, uid string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps, ok := c.pods[uid]
	if !ok || len(ps.refs) == 0 {
		return false, nil
	}
	next := &PodFile{UID: uid, Pod: ps.key, OptOut: ps.optOut}
	if ps.file != nil {
		next.Volumes = slices.Clone(ps.file.Volumes)
	}
	changed := ps.file == nil || ps.file.Pod != ps.key || ps.file.OptOut != ps.optOut
	var errs []error
	for _, r := range ps.refs {
		prev := next.Volume(r.ID())
		if r.Kind == SubPath {
			if v := c.captureSubPath(mounts, r, prev); v != prev {
				next.set(v)
				changed = true
			}
			continue
		}
		mt, ok := mounts.Tmpfs(r.Path)
		if !ok {
			continue
		}
		v, err := c.capture(uid, r, mt.Options(), ps.optOut, prev)
		if err != nil {
			errs = append(errs, fmt.Errorf("pod %s volume %s: %w", ps.key, r.ID(), err))
			continue
		}
		if v != prev {
			next.set(v)
			changed = true
		}
	}
	if !changed {
		return false, errors.Join(errs...)
	}
	if err := c.store.Save(next); err != nil {
		return false, errors.Join(append(errs, err)...)
	}
	ps.file = next
	return true, errors.Join(errs...)
}

// capture returns prev when the volume is unchanged, else a new capture.
func (c *Capturer) capture(uid string, r Ref, opts Options, optOut bool, prev *Volume) (*Volume, error) {
	if r.Kind.Sensitive() && c.sealer == nil && !optOut && prev != nil {
		return prev, nil // no key now: keep what was sealed with it
	}
	withhold := optOut || (r.Kind.Sensitive() && c.sealer == nil)
	v := &Volume{Ref: r, Options: opts, Withheld: withhold && r.Kind.content(), Refreshed: c.now().UTC()}
	if !r.Kind.content() || withhold {
		if prev != nil && optionsEqual(prev.Options, opts) && prev.Withheld == v.Withheld && prev.Entries == nil && prev.Sealed == nil {
			return prev, nil
		}
		return v, nil
	}
	ver := Version(r.Path)
	if ver != "" && prev != nil && !prev.Withheld && prev.Version == ver && optionsEqual(prev.Options, opts) {
		return prev, nil
	}
	var entries []Entry
	for try := 0; ; try++ {
		var err error
		if entries, err = Walk(r.Path); err == nil && Version(r.Path) == ver {
			break
		}
		if try == 2 { // kubelet kept swapping ..data under us
			if err == nil {
				err = errors.New("content changed while reading it")
			}
			return nil, err
		}
		ver = Version(r.Path)
	}
	if ver == "" {
		ver = entriesVersion(entries)
		if prev != nil && prev.Version == ver && optionsEqual(prev.Options, opts) {
			return prev, nil
		}
	}
	v.Version = ver
	if r.Kind.Sensitive() {
		sealed, err := sealEntries(c.sealer, uid, r, entries)
		if err != nil {
			return nil, fmt.Errorf("seal: %w", err)
		}
		v.Sealed = sealed
	} else {
		v.Entries = entries
	}
	return v, nil
}

// captureSubPath returns prev when the subPath mount is not there (not set
// up yet, or gone with a reboot) or binds the same source, else a new
// capture.
func (c *Capturer) captureSubPath(mounts Mounts, r Ref, prev *Volume) *Volume {
	src, ok := mounts.BindSource(r.Path)
	if !ok || (prev != nil && prev.Source == src) {
		return prev
	}
	return &Volume{Ref: r, Source: src, Refreshed: c.now().UTC()}
}

func optionsEqual(a, b Options) bool { return a.Data == b.Data && slices.Equal(a.Flags, b.Flags) }

// Outcome is what restore did with one volume of a pod.
type Outcome struct {
	Ref
	Restored Restored
	// Missing, when set, says why the volume came back without the content
	// it had (not captured, opted out, undecryptable, a restore error).
	Missing string
}

// Missing reasons.
const (
	MissingNotCaptured   = "not captured"
	MissingOptedOut      = "opted out"
	MissingWithheld      = "withheld (no node key)"
	MissingUndecryptable = "undecryptable"
	MissingRestoreFailed = "restore failed"
)

// Restore brings back the volumes refs of pod uid before its containers are
// created: every volume kubelet always backs with tmpfs (Secret, projected,
// downwardAPI) and every emptyDir captured as a tmpfs gets a tmpfs at its
// path, with its captured content where there is one. A volume without
// usable content still gets its (empty) tmpfs, so that kubelet, once back,
// writes into the mount the container sees. An emptyDir never captured is
// left alone: its medium is unknown, and a disk emptyDir survived the reboot.
// Then every captured subPath mount is bound again from its source (Bind).
func (c *Capturer) Restore(uid string, refs []Ref) []Outcome {
	c.mu.Lock()
	var file *PodFile
	if ps, ok := c.pods[uid]; ok {
		file = ps.file
	}
	c.mu.Unlock()
	var out, subs []Outcome
	for _, r := range refs {
		if r.Kind == SubPath {
			subs = append(subs, Outcome{Ref: r})
			continue
		}
		var v *Volume
		if file != nil {
			v = file.Volume(r.ID())
		}
		o := Outcome{Ref: r}
		var entries []Entry
		opts := Options{}
		switch {
		case v == nil && !r.Kind.alwaysTmpfs():
			continue
		case v == nil:
			o.Missing = MissingNotCaptured
		case !r.Kind.content():
			opts = v.Options
		case v.Withheld && file.OptOut:
			opts, o.Missing = v.Options, MissingOptedOut
		case v.Withheld:
			opts, o.Missing = v.Options, MissingWithheld
		case v.Kind.Sensitive():
			opts = v.Options
			if c.sealer == nil {
				o.Missing = MissingUndecryptable + ": no node key"
				break
			}
			var err error
			if entries, err = OpenEntries(c.sealer, uid, v); err != nil {
				o.Missing = MissingUndecryptable + ": " + err.Error()
				entries = nil
			}
		default:
			opts, entries = v.Options, v.Entries
		}
		res, err := Restore(r.Path, opts, entries)
		if err != nil && entries != nil {
			// Content failed: at least the empty tmpfs.
			o.Missing = MissingRestoreFailed + ": " + err.Error()
			res, err = Restore(r.Path, opts, nil)
		}
		if err != nil {
			o.Missing = MissingRestoreFailed + ": " + err.Error()
		}
		o.Restored = res
		out = append(out, o)
	}
	// SubPath mounts last: their sources are in the volumes just restored.
	if len(subs) == 0 {
		return out
	}
	mounts, merr := ReadMounts(c.mountInfo)
	for _, o := range subs {
		var v *Volume
		if file != nil {
			v = file.Volume(o.ID())
		}
		var err error
		switch {
		case v == nil:
			o.Missing = MissingNotCaptured
		case merr != nil:
			err = merr
		default:
			o.Restored, err = Bind(o.Path, v.Source, mounts)
		}
		if err != nil {
			o.Missing = MissingRestoreFailed + ": " + err.Error()
		}
		out = append(out, o)
	}
	return out
}

// Status is one captured volume as `holdfastd cri pods` shows it.
type Status struct {
	ID        string    `json:"volume"`
	Content   string    `json:"content"` // sealed, plain, empty (memory emptyDir), withheld, bind:<source> (subPath)
	Refreshed time.Time `json:"refreshed"`
}

// StatusOf summarises a capture file.
func StatusOf(f *PodFile) []Status {
	var out []Status
	for _, v := range f.Volumes {
		s := Status{ID: v.ID(), Refreshed: v.Refreshed}
		switch {
		case v.Kind == SubPath:
			s.Content = "bind:" + v.Source
		case v.Withheld:
			s.Content = "withheld"
		case v.Sealed != nil:
			s.Content = "sealed"
		case !v.Kind.content():
			s.Content = "empty"
		default:
			s.Content = "plain"
		}
		out = append(out, s)
	}
	return out
}
