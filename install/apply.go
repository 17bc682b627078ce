package install

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/pmezard/go-difflib/difflib"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

func encodeRecord(r *Record) ([]byte, error) {
	return statefile.Encode(RecordKind, RecordVersion, r)
}

// Apply carries out a plan: backups first, then the record (so a crash
// half-way leaves a record uninstall can use), then every change. If a
// change fails, the changes already applied are undone and the previous
// record is put back.
func Apply(p *Plan) (err error) {
	o := p.opts
	if err := o.cleanTemps(p); err != nil {
		return err
	}
	if p.Empty() {
		return nil
	}
	if p.Record != nil {
		for _, d := range p.Record.Dirs {
			if err := os.MkdirAll(o.host(d), 0o755); err != nil {
				return fmt.Errorf("create %s: %w", d, err)
			}
		}
		for sum, data := range p.backups {
			if err := atomicfile.WriteFile(o.host(backupPath(o.StateDir, sum)), data, 0o600); err != nil {
				return fmt.Errorf("back up original: %w", err)
			}
		}
		if err := statefile.Save(o.host(recordPath(o.StateDir)), RecordKind, RecordVersion, p.Record); err != nil {
			return err
		}
	}
	var applied []Change
	defer func() {
		if err == nil {
			return
		}
		for i := len(applied) - 1; i >= 0; i-- {
			if rerr := o.undo(applied[i]); rerr != nil {
				err = fmt.Errorf("%w; rolling back %s also failed: %v", err, applied[i].Path, rerr)
			}
		}
		if p.prev != nil {
			if rerr := statefile.Save(o.host(recordPath(o.StateDir)), RecordKind, RecordVersion, p.prev); rerr != nil {
				err = fmt.Errorf("%w; restoring the previous install record also failed: %v", err, rerr)
			}
		} else if p.Record != nil {
			o.cleanState(nil, p.Record.Dirs)
		}
	}()
	for _, ch := range p.Changes {
		if err := o.do(ch); err != nil {
			return fmt.Errorf("%s %s: %w", ch.Kind, ch.Path, err)
		}
		applied = append(applied, ch)
	}
	if p.Record == nil {
		var dirs []string
		if p.prev != nil {
			dirs = p.prev.Dirs
		}
		return o.cleanState(nil, dirs)
	}
	return o.cleanState(p.Record, nil)
}

// cleanTemps removes what an install or uninstall killed before its renames
// left beside the files it writes: the record, the backups and every file
// of the plan. Only the temp names atomicfile gives these very files are
// touched, so directories install shares with others (/etc/cni/net.d, the
// containerd config dir) keep everything else.
func (o *Options) cleanTemps(p *Plan) error {
	targets := []string{recordPath(o.StateDir), backupPath(o.StateDir, "*")}
	for _, ch := range p.Changes {
		targets = append(targets, ch.Path)
	}
	for _, t := range targets {
		if _, err := atomicfile.CleanTemps(o.host(t)); err != nil {
			return err
		}
	}
	return nil
}

// cleanState removes backups no longer referenced by rec (all of them and
// the record itself when rec is nil), then the given directories install
// created, deepest first, where empty.
func (o *Options) cleanState(rec *Record, dirs []string) error {
	keep := map[string]bool{}
	if rec != nil {
		for _, f := range rec.Files {
			if f.Existed {
				keep[f.OrigSHA256] = true
			}
		}
	}
	bdir := o.host(path.Join(o.StateDir, "backup"))
	ents, _ := os.ReadDir(bdir)
	for _, e := range ents {
		if !keep[e.Name()] {
			if err := atomicfile.Remove(filepath.Join(bdir, e.Name())); err != nil {
				return err
			}
		}
	}
	if rec == nil {
		if err := atomicfile.Remove(o.host(recordPath(o.StateDir))); err != nil {
			return err
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		err := os.Remove(o.host(dirs[i]))
		if err != nil && !errors.Is(err, fs.ErrNotExist) && !isNotEmpty(err) {
			return fmt.Errorf("remove directory %s: %w", dirs[i], err)
		}
	}
	return nil
}

func isNotEmpty(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "not empty")
}

func (o *Options) do(ch Change) error {
	hp := o.host(ch.Path)
	if !ch.NewExists {
		return atomicfile.Remove(hp)
	}
	if ch.NewLink != "" {
		return symlinkAtomic(ch.NewLink, hp)
	}
	if ch.OldLink != "" {
		if err := os.Remove(hp); err != nil {
			return err
		}
	}
	if err := atomicfile.WriteFile(hp, ch.New, ch.NewMode); err != nil {
		return err
	}
	if ch.chown && os.Geteuid() == 0 {
		return os.Lchown(hp, ch.NewUID, ch.NewGID)
	}
	return nil
}

func (o *Options) undo(ch Change) error {
	hp := o.host(ch.Path)
	switch {
	case !ch.OldExists:
		return atomicfile.Remove(hp)
	case ch.OldLink != "":
		return symlinkAtomic(ch.OldLink, hp)
	default:
		return atomicfile.WriteFile(hp, ch.Old, ch.OldMode)
	}
}

func symlinkAtomic(target, hp string) error {
	if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(hp), "."+filepath.Base(hp)+".tmp-link")
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, hp); err != nil {
		os.Remove(tmp)
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(hp))
}

// Summary writes one line per change and a closing line; a plan without
// changes says "unchanged".
func Summary(w io.Writer, p *Plan, dryRun bool) {
	verb := map[string]string{Add: "added", Modify: "modified", Restore: "restored", Remove: "removed"}
	if dryRun {
		verb = map[string]string{Add: "would add", Modify: "would modify", Restore: "would restore", Remove: "would remove"}
	}
	for _, ch := range p.Changes {
		fmt.Fprintf(w, "%-13s %s (%s)\n", verb[ch.Kind], ch.Path, ch.Role)
	}
	for _, n := range p.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	switch {
	case len(p.Changes) == 0 && p.Empty():
		fmt.Fprintln(w, "unchanged: nothing to do")
	case len(p.Changes) == 0:
		fmt.Fprintln(w, "unchanged: files already in place; install record updated")
	}
}

// Diff writes the exact changes of p as unified diffs (binaries and
// symlinks as one line each).
func Diff(w io.Writer, p *Plan) error {
	for _, ch := range p.Changes {
		from, to := "a"+ch.Path, "b"+ch.Path
		if !ch.OldExists {
			from = "/dev/null"
		}
		if !ch.NewExists {
			to = "/dev/null"
		}
		switch {
		case ch.NewLink != "" || ch.OldLink != "":
			fmt.Fprintf(w, "symlink %s: %q -> %q\n", ch.Path, ch.OldLink, ch.NewLink)
		case ch.Binary:
			fmt.Fprintf(w, "binary %s: %s -> %s\n", ch.Path, describe(ch.OldExists, ch.Old), describe(ch.NewExists, ch.New))
		default:
			d := difflib.UnifiedDiff{A: splitLines(ch.Old), B: splitLines(ch.New),
				FromFile: from, ToFile: to, Context: 3}
			if !ch.OldExists {
				d.A = nil
			}
			if !ch.NewExists {
				d.B = nil
			}
			if err := difflib.WriteUnifiedDiff(w, d); err != nil {
				return err
			}
		}
	}
	return nil
}

func describe(exists bool, b []byte) string {
	if !exists {
		return "absent"
	}
	return fmt.Sprintf("%d bytes sha256:%s", len(b), sha(b)[:16])
}

// splitLines splits b into lines keeping their newlines; a last line
// without one is marked the way diff(1) marks it.
func splitLines(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	lines := strings.SplitAfter(string(b), "\n")
	if lines[len(lines)-1] == "" {
		return lines[:len(lines)-1]
	}
	lines[len(lines)-1] += "\n\\ No newline at end of file\n"
	return lines
}
