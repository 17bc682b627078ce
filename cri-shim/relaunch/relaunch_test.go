package relaunch

import (
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/cri-shim/record"
)

func pod(t *testing.T, name string, ann map[string]string, sb ...record.Sandbox) *record.Pod {
	raw, err := record.MarshalProto(&runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "ns", Uid: "uid-" + name}, Annotations: ann}})
	if err != nil {
		t.Fatal(err)
	}
	return &record.Pod{UID: "uid-" + name, Name: name, Namespace: "ns", Sandbox: raw, Sandboxes: sb, Containers: map[string]*record.Container{}}
}

func TestPlan(t *testing.T) {
	old := record.Sandbox{ID: "s0", BootID: "old"}
	running := pod(t, "running", nil, old)
	stopped := pod(t, "stopped", nil, record.Sandbox{ID: "s1", BootID: "old", Stopped: true})
	static := pod(t, "static", map[string]string{"kubernetes.io/config.source": "file"}, old)
	fresh := pod(t, "fresh", nil, record.Sandbox{ID: "s2", BootID: "now"})
	done := pod(t, "done", nil, old)
	done.Relaunch = &record.Relaunch{BootID: "now", Outcome: record.OutcomeFailed}
	// an old sandbox removed, a newer one still there: still relaunched
	gc := pod(t, "gc", nil, record.Sandbox{ID: "s3", BootID: "old", Attempt: 1})
	none := pod(t, "none", nil)

	todo, skipped := Plan([]*record.Pod{running, stopped, static, fresh, done, gc, none}, "now")
	if len(todo) != 2 || todo[0].Name != "gc" || todo[1].Name != "running" {
		t.Fatalf("todo %v", names(todo))
	}
	if len(skipped) != 5 {
		t.Fatalf("skipped %d", len(skipped))
	}
	for _, s := range skipped {
		if s.Reason == "" {
			t.Fatalf("%s skipped without a reason", s.Pod.Name)
		}
	}
}

func names(ps []*record.Pod) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func TestOrder(t *testing.T) {
	p := pod(t, "p", nil)
	p.Containers = map[string]*record.Container{
		"init1":   {Name: "init1", CreateSeq: 1, StartSeq: 2, Init: true},
		"init2":   {Name: "init2", CreateSeq: 3, StartSeq: 4},
		"app":     {Name: "app", CreateSeq: 5, StartSeq: 8},
		"sidecar": {Name: "sidecar", CreateSeq: 6, StartSeq: 7},
		"never":   {Name: "never", CreateSeq: 9},
	}
	p.Facts = &record.Facts{InitContainers: []string{"init2"}, RestartPolicy: record.RestartNever}
	inits, apps := Order(p)
	if got := cnames(inits); got != "init1,init2" {
		t.Fatalf("inits %s", got)
	}
	if got := cnames(apps); got != "sidecar,app,never" {
		t.Fatalf("apps %s", got)
	}
	if RestartPolicy(p) != record.RestartNever {
		t.Fatal("facts policy ignored")
	}
	p.Facts = nil
	if RestartPolicy(p) != record.RestartAlways {
		t.Fatal("default policy is not Always")
	}
}

func cnames(cs []*record.Container) string {
	s := ""
	for i, c := range cs {
		if i > 0 {
			s += ","
		}
		s += c.Name
	}
	return s
}

// TestCheckBackoff: kubelet's defaults pass; a zero base (a restart loop)
// or a max below the base is refused.
func TestCheckBackoff(t *testing.T) {
	if err := CheckBackoff(DefaultBackoffBase, DefaultBackoffMax); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for _, c := range [][2]time.Duration{{0, DefaultBackoffMax}, {-time.Second, time.Second}, {time.Minute, time.Second}} {
		if err := CheckBackoff(c[0], c[1]); err == nil || !strings.Contains(err.Error(), "restart backoff") {
			t.Errorf("backoff %v / max %v: got %v, want a refusal", c[0], c[1], err)
		}
	}
}

func TestBackoffDoublesToMax(t *testing.T) {
	now := time.Unix(1000, 0)
	r := &Runner{BackoffBase: DefaultBackoffBase, BackoffMax: DefaultBackoffMax, Now: func() time.Time { return now }}
	exit := now
	var waits []time.Duration
	for i := 0; i < 8; i++ {
		// advance the clock second by second until the restart is due
		start := now
		for !r.due("p/c", exit) {
			now = now.Add(time.Second)
		}
		waits = append(waits, now.Sub(start))
		exit = now // the restarted container exits at once
	}
	want := []time.Duration{10, 20, 40, 80, 160, 300, 300, 300}
	for i, w := range want {
		if waits[i] != w*time.Second {
			t.Fatalf("restart %d waited %v, want %v (all %v)", i, waits[i], w*time.Second, waits)
		}
	}
}
