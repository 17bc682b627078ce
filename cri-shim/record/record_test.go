package record

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

func sandboxRaw(t testing.TB, uid string) []byte {
	raw, err := MarshalProto(&runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: uid}}, RuntimeHandler: "runc"})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestStoreRoundTripAndLastSandbox(t *testing.T) {
	dir := t.TempDir()
	s, bad, err := Open(dir)
	if err != nil || len(bad) != 0 {
		t.Fatal(err, bad)
	}
	add := func(id string, attempt uint32) {
		err := s.Update("uid-1", true, func(p *Pod) (bool, error) {
			p.Name, p.Namespace, p.Sandbox = "web", "default", sandboxRaw(t, "uid-1")
			p.Sandboxes = append(p.Sandboxes, Sandbox{ID: id, Attempt: attempt, BootID: "b1"})
			p.Containers["app"] = &Container{Name: "app", ID: "c-" + id, SandboxID: id, State: StateRunning}
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	add("sb0", 0)
	add("sb1", 1)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s2, bad, err := Open(dir)
	if err != nil || len(bad) != 0 {
		t.Fatal(err, bad)
	}
	p, ok := s2.Get("uid-1")
	if !ok || len(p.Sandboxes) != 2 || p.LatestSandbox().ID != "sb1" {
		t.Fatalf("reloaded %+v", p)
	}
	req, err := p.SandboxRequest()
	if err != nil || req.RuntimeHandler != "runc" || req.Config.Metadata.Uid != "uid-1" {
		t.Fatalf("sandbox request %v %v", req, err)
	}
	if uid, ok := s2.UIDForSandbox("sb0"); !ok || uid != "uid-1" {
		t.Fatal("sandbox index")
	}
	if uid, ok := s2.UIDForContainer("c-sb1"); !ok || uid != "uid-1" {
		t.Fatal("container index")
	}
	// Removing an old sandbox keeps the pod; removing the last drops it.
	rm := func(id string) {
		s2.Update("uid-1", false, func(p *Pod) (bool, error) {
			var kept []Sandbox
			for _, sb := range p.Sandboxes {
				if sb.ID != id {
					kept = append(kept, sb)
				}
			}
			p.Sandboxes = kept
			return true, nil
		})
	}
	rm("sb0")
	if _, ok := s2.Get("uid-1"); !ok {
		t.Fatal("pod dropped when an old sandbox was removed")
	}
	rm("sb1")
	if _, ok := s2.Get("uid-1"); ok {
		t.Fatal("pod kept after its last sandbox was removed")
	}
	if _, err := os.Stat(filepath.Join(dir, "pods", "uid-1.json")); !os.IsNotExist(err) {
		t.Fatalf("record file still there: %v", err)
	}
}

func TestBadInputNoChange(t *testing.T) {
	s, _, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range []string{"", "../x", "a/b", ".hidden", strings.Repeat("x", 200)} {
		err := s.Update(uid, true, func(p *Pod) (bool, error) {
			p.Sandboxes = []Sandbox{{ID: "x"}}
			return true, nil
		})
		if err == nil {
			t.Fatalf("uid %q accepted", uid)
		}
	}
	if len(s.List()) != 0 {
		t.Fatal("bad UIDs left records")
	}
}

func TestCorruptAndFutureRecordsRefused(t *testing.T) {
	dir := t.TempDir()
	s, _, _ := Open(dir)
	for _, uid := range []string{"good", "corrupt", "future"} {
		s.Update(uid, true, func(p *Pod) (bool, error) {
			p.Name, p.Sandbox = uid, sandboxRaw(t, uid)
			p.Sandboxes = []Sandbox{{ID: "sb-" + uid}}
			return true, nil
		})
	}
	pd := filepath.Join(dir, "pods")
	data, _ := os.ReadFile(filepath.Join(pd, "corrupt.json"))
	os.WriteFile(filepath.Join(pd, "corrupt.json"), []byte(strings.Replace(string(data), "sb-corrupt", "sb-CORRUPT", 1)), 0o600)
	if err := statefile.Save(filepath.Join(pd, "future.json"), PodKind, PodVersion+1, Pod{UID: "future"}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(pd, "truncated.json"), data[:len(data)/2], 0o600)
	s2, bad, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(s2.List()) != 1 || s2.List()[0].UID != "good" {
		t.Fatalf("loaded %d records, want only the good one", len(s2.List()))
	}
	if len(bad) != 3 {
		t.Fatalf("want 3 load errors, got %v", bad)
	}
	for _, b := range bad {
		if !strings.Contains(b.Error(), b.Path) {
			t.Fatalf("error does not name its file: %v", b)
		}
	}
}

func TestBootMarker(t *testing.T) {
	s, _, _ := Open(t.TempDir())
	b, err := s.LoadBoot()
	if err != nil || b.BootID != "" {
		t.Fatal(b, err)
	}
	s.SaveBoot("abc")
	if b, _ := s.LoadBoot(); b.BootID != "abc" {
		t.Fatal(b)
	}
	f := filepath.Join(t.TempDir(), "boot_id")
	os.WriteFile(f, []byte("  \n"), 0o644)
	if _, err := ReadBootID(f); err == nil {
		t.Fatal("empty boot id accepted")
	}
}

// FuzzDecodePod feeds arbitrary bytes as a record file: never a panic, and
// anything accepted decodes its CRI requests without panicking.
func FuzzDecodePod(f *testing.F) {
	good, _ := statefile.Encode(PodKind, PodVersion, Pod{UID: "u", Sandbox: sandboxRaw(f, "u"), Sandboxes: []Sandbox{{ID: "s"}},
		Containers: map[string]*Container{"a": {Name: "a", Request: []byte(`{"config":{"metadata":{"name":"a"}}}`)}}})
	f.Add(good)
	f.Add([]byte("{}"))
	f.Add(good[:len(good)/3])
	f.Fuzz(func(t *testing.T, data []byte) {
		var p Pod
		if _, err := statefile.Decode(data, PodKind, PodVersion, &p); err != nil {
			return
		}
		p.SandboxRequest()
		for _, c := range p.Containers {
			if c != nil {
				c.ContainerRequest()
			}
		}
		p.LatestSandbox()
		p.Ordered()
	})
}

// TestOpenSweepsKilledShimsTemps: a shim killed between writing a record's
// (or the boot marker's) temp file and its rename leaves the temp file;
// the next Open, before the shim writes anything, removes it.
func TestOpenSweepsKilledShimsTemps(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "pods"), 0o700)
	var left []string
	for _, target := range []string{filepath.Join(dir, "pods", "uid-1.json"), filepath.Join(dir, "boot.json")} {
		f, err := os.CreateTemp(filepath.Dir(target), atomicfile.TempPattern(filepath.Base(target)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		left = append(left, f.Name())
	}
	if _, _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range left {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("leftover %s survived Open", p)
		}
	}
}

func TestSelectCopiesOnlyMatchesSorted(t *testing.T) {
	s, bad, err := Open(t.TempDir())
	if err != nil || len(bad) != 0 {
		t.Fatal(err, bad)
	}
	if s.Len() != 0 || len(s.Select(func(*Pod) bool { return true })) != 0 {
		t.Fatal("empty store")
	}
	// Added out of name order; "b-*" and "d-*" are the relaunched ones.
	for _, name := range []string{"d-web", "a-web", "c-web", "b-web", "e-web"} {
		err := s.Update("uid-"+name, true, func(p *Pod) (bool, error) {
			p.Name, p.Namespace, p.Sandbox = name, "default", sandboxRaw(t, "uid-"+name)
			p.Sandboxes = []Sandbox{{ID: "sb-" + name, BootID: "b1"}}
			p.Containers["app"] = &Container{Name: "app", ID: "c-" + name, State: StateRunning}
			if name[0] == 'b' || name[0] == 'd' {
				p.Relaunch = &Relaunch{BootID: "b1", Outcome: OutcomeRelaunched, Containers: map[string]string{"app": "c-" + name}}
			}
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if s.Len() != 5 {
		t.Fatalf("Len %d, want 5", s.Len())
	}
	tested := 0
	got := s.Select(func(p *Pod) bool { tested++; return p.Relaunch != nil })
	if tested != 5 {
		t.Fatalf("predicate tested %d records, want 5", tested)
	}
	if len(got) != 2 || got[0].Name != "b-web" || got[1].Name != "d-web" {
		t.Fatalf("Select kept %v, want [b-web d-web]", podNames(got))
	}
	// The results are copies: changing them changes nothing stored.
	got[0].Name = "changed"
	got[0].Containers["app"].State = StateExited
	got[0].Relaunch.Containers["app"] = "other"
	got[0].Sandboxes[0].ID = "other"
	p, _ := s.Get("uid-b-web")
	if p.Name != "b-web" || p.Containers["app"].State != StateRunning || p.Relaunch.Containers["app"] != "c-b-web" || p.Sandboxes[0].ID != "sb-b-web" {
		t.Fatalf("Select returned the stored record, not a copy: stored %+v", p)
	}
	if again := s.Select(func(p *Pod) bool { return p.Relaunch != nil }); again[0].Name != "b-web" || again[0].Containers["app"].State != StateRunning {
		t.Fatalf("second Select sees the first one's changes: %+v", again[0])
	}
	if all := s.Select(func(*Pod) bool { return true }); len(all) != 5 || podNames(all)[0] != "a-web" || podNames(all)[4] != "e-web" {
		t.Fatalf("Select all: %v", podNames(all))
	}
	if err := s.Update("uid-a-web", false, func(p *Pod) (bool, error) { p.Sandboxes = nil; return true, nil }); err != nil {
		t.Fatal(err)
	}
	if s.Len() != 4 {
		t.Fatalf("Len %d after a record went, want 4", s.Len())
	}
}

func podNames(ps []*Pod) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}
