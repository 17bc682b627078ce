package health_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/holdfast-edge/holdfast/internal/kubeclient/kubefake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/health"
	"github.com/holdfast-edge/holdfast/health/members"
	"github.com/holdfast-edge/holdfast/health/peer"
)

func node(name, ip, unit, key string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}, Annotations: map[string]string{}}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	if unit != "" {
		n.Labels["holdfast.dev/unit"] = unit
	}
	if key != "" {
		n.Annotations[health.PublicKeyAnnotation] = key
	}
	return n
}

func newKey(t *testing.T) (ed25519.PrivateKey, string) {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k, health.PublicKeyString(k)
}

// TestFollowNodes: Follow publishes this node's missing key, then turns Node
// changes into member lists: a node added with a key joins, a node whose
// key annotation is removed or whose unit label changes leaves this node's
// unit, and a status-only update recomputes nothing.
func TestFollowNodes(t *testing.T) {
	k1, _ := newKey(t)
	_, p2 := newKey(t)
	_, p3 := newKey(t)
	cs := fake.NewClientset(node("node1", "10.0.0.1", "a", ""), node("node2", "10.0.0.2", "a", p2))
	watching := make(chan struct{})
	cs.PrependWatchReactor("nodes", func(action clienttesting.Action) (bool, watch.Interface, error) {
		// Objects changed between the informer's list and its watch would
		// be missed by the fake: the test changes nothing before this.
		w, err := cs.Tracker().Watch(action.GetResource(), action.GetNamespace())
		if err != nil {
			return false, nil, err
		}
		close(watching)
		return true, w, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	applied := make(chan []members.Member, 16)
	kc := health.NewKubeFromClient(kubefake.Wrap(cs), "node1", "holdfast.dev/unit", slog.New(slog.DiscardHandler))
	go kc.Follow(ctx, k1, health.FollowOptions{Debounce: 50 * time.Millisecond, Retry: 100 * time.Millisecond}, func(l []members.Member) error {
		applied <- l
		return nil
	})
	<-watching
	expectUnit(t, applied, "node1,node2")
	n1, err := cs.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
	if err != nil || n1.Annotations[health.PublicKeyAnnotation] != health.PublicKeyString(k1) {
		t.Fatalf("node1's key not published: %v %v", err, n1.Annotations)
	}

	mustCreate(t, cs, node("node3", "10.0.0.3", "a", p3))
	expectUnit(t, applied, "node1,node2,node3")

	n2 := node("node2", "10.0.0.2", "a", p2)
	n2.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	mustUpdate(t, cs, n2)
	select {
	case l := <-applied:
		t.Fatalf("a status-only update recomputed the list: %v", l)
	case <-time.After(300 * time.Millisecond):
	}

	mustUpdate(t, cs, node("node2", "10.0.0.2", "a", ""))
	expectUnit(t, applied, "node1,node3")

	mustUpdate(t, cs, node("node3", "10.0.0.3", "b", p3))
	expectUnit(t, applied, "node1")
}

// expectUnit waits for the next applied list and checks node1's unit in it.
func expectUnit(t *testing.T, applied chan []members.Member, want string) {
	t.Helper()
	select {
	case l := <-applied:
		unit, _, err := members.Unit(l, "node1")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, m := range unit {
			names = append(names, m.Name)
		}
		if got := strings.Join(names, ","); got != want {
			t.Fatalf("unit %s, want %s", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no member list applied; want unit %s", want)
	}
}

var rv = 100

func mustCreate(t *testing.T, cs *fake.Clientset, n *corev1.Node) {
	t.Helper()
	if _, err := cs.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// mustUpdate updates n with a new resourceVersion, as the apiserver would
// (the fake keeps whatever it is given, and an unchanged one is a resync).
func mustUpdate(t *testing.T, cs *fake.Clientset, n *corev1.Node) {
	t.Helper()
	rv++
	n.ResourceVersion = strconv.Itoa(rv)
	if _, err := cs.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestFollowStaggeredStart is a cluster's boot: three daemons with
// --kubeconfig start one after the other, so the first lists only itself.
// Following the Nodes, every daemon ends with the unit of three, all alive.
// Each daemon listens on its own loopback address (127.0.0.N), the same port.
func TestFollowStaggeredStart(t *testing.T) {
	port := freePort(t)
	cs := fake.NewClientset(node("n1", "127.0.0.1", "", ""), node("n2", "127.0.0.2", "", ""), node("n3", "127.0.0.3", "", ""))
	watching := make(chan struct{}, 3)
	cs.PrependWatchReactor("nodes", func(action clienttesting.Action) (bool, watch.Interface, error) {
		w, err := cs.Tracker().Watch(action.GetResource(), action.GetNamespace())
		if err != nil {
			return false, nil, err
		}
		watching <- struct{}{}
		return true, w, nil
	})
	var ds []*health.Daemon
	var last time.Time
	for i, name := range []string{"n1", "n2", "n3"} {
		last = time.Now()
		ds = append(ds, startKubeDaemon(t, cs, name, fmt.Sprintf("127.0.0.%d:%d", i+1, port)))
		// The fake misses changes made between an informer's list and its
		// watch: the next node publishes its key once this one watches.
		select {
		case <-watching:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s never watched Nodes", name)
		}
		time.Sleep(udpPeriod) // daemons start a period apart, as on real nodes
	}
	deadline := time.Now().Add(10 * udpPeriod)
	for {
		ok := true
		for _, d := range ds {
			s := d.Snapshot()
			ok = ok && s.Members == 3 && s.Verdicts["n1"] == "alive" && s.Verdicts["n2"] == "alive" && s.Verdicts["n3"] == "alive"
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			for _, d := range ds {
				t.Logf("%+v", d.Snapshot())
			}
			t.Fatal("the unit did not converge")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("unit of 3 alive everywhere %s after the last daemon started", time.Since(last))
}

// startKubeDaemon starts a daemon as `holdfastd health --kubeconfig` does:
// member list from the Nodes at start, then Follow.
func startKubeDaemon(t *testing.T, cs *fake.Clientset, name, listen string) *health.Daemon {
	t.Helper()
	key, _ := newKey(t)
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	kc := health.NewKubeFromClient(kubefake.Wrap(cs), name, "holdfast.dev/unit", log)
	cfg := health.Config{NodeName: name, Listen: listen, Period: udpPeriod, MaxSkew: peer.DefaultMaxSkew, Key: key, StateDir: t.TempDir(), Log: log, Registry: prometheus.NewRegistry()}
	var err error
	if cfg.Members, cfg.Source, err = kc.Members(ctx, cfg.StateDir, key); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Members) == 0 || cfg.Members[len(cfg.Members)-1].Name != name {
		t.Fatalf("%s at start lists %v: want the nodes started so far, itself last", name, cfg.Members)
	}
	d, err := health.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() {
		kc.Follow(ctx, key, health.FollowOptions{Debounce: 100 * time.Millisecond}, func(l []members.Member) error { return d.SetMembers(l, "apiserver") })
		done <- struct{}{}
	}()
	go func() { d.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return d
}

// TestFollowAfterOutage: with the apiserver away at start the persisted list
// is used; once the apiserver answers, the watch brings the current list
// (and this node's key, which could not be published, is published).
func TestFollowAfterOutage(t *testing.T) {
	k1, p1 := newKey(t)
	_, p2 := newKey(t)
	_, pOld := newKey(t)
	dir := t.TempDir()
	saved := []members.Member{{Name: "node1", Address: "10.0.0.1", PublicKey: p1}, {Name: "gone", Address: "10.0.0.9", PublicKey: pOld}}
	if err := health.SaveMembers(dir, health.MembersState{Node: "node1", Epoch: 4, Source: "apiserver", Updated: time.Now(), Members: saved}); err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset(node("node1", "10.0.0.1", "", ""), node("node2", "10.0.0.2", "", p2))
	var down atomic.Bool
	down.Store(true)
	refused := errors.New("connection refused")
	cs.PrependReactor("*", "nodes", func(clienttesting.Action) (bool, runtime.Object, error) {
		return down.Load(), nil, refused
	})
	cs.PrependWatchReactor("nodes", func(action clienttesting.Action) (bool, watch.Interface, error) {
		if down.Load() {
			return true, nil, refused
		}
		w, err := cs.Tracker().Watch(action.GetResource(), action.GetNamespace())
		return true, w, err
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kc := health.NewKubeFromClient(kubefake.Wrap(cs), "node1", "holdfast.dev/unit", slog.New(slog.DiscardHandler))
	list, src, err := kc.Members(ctx, dir, k1)
	if err != nil || len(list) != 2 || !strings.HasPrefix(src, "persisted") {
		t.Fatalf("at start with the apiserver away: %v from %q, %v; want the persisted list", list, src, err)
	}
	applied := make(chan []members.Member, 16)
	go kc.Follow(ctx, k1, health.FollowOptions{Debounce: 50 * time.Millisecond}, func(l []members.Member) error {
		applied <- l
		return nil
	})
	select {
	case l := <-applied:
		t.Fatalf("applied %v while the apiserver was away", l)
	case <-time.After(500 * time.Millisecond):
	}
	down.Store(false)
	expectUnit(t, applied, "node1,node2")
	n1, err := cs.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
	if err != nil || n1.Annotations[health.PublicKeyAnnotation] != p1 {
		t.Fatalf("node1's key not published after the outage: %v %v", err, n1.Annotations)
	}
}

// TestMembersOfflineRebootStartsAtOnce: after an offline reboot the
// apiserver does not refuse, it is silent (the cloud link drops packets).
// With a persisted list the daemon must not wait for it: its peers would
// vote it dead meanwhile. Without one it has nothing to start from and
// says so.
func TestMembersOfflineRebootStartsAtOnce(t *testing.T) {
	k1, p1 := newKey(t)
	dir := t.TempDir()
	saved := []members.Member{{Name: "node1", Address: "10.0.0.1", PublicKey: p1}}
	if err := health.SaveMembers(dir, health.MembersState{Node: "node1", Epoch: 2, Source: "apiserver", Updated: time.Now(), Members: saved}); err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset(node("node1", "10.0.0.1", "", p1))
	var calls atomic.Int32
	cs.PrependReactor("*", "nodes", func(clienttesting.Action) (bool, runtime.Object, error) {
		calls.Add(1)
		return true, nil, errors.New("apiserver unreachable")
	})
	kc := health.NewKubeFromClient(kubefake.Wrap(cs), "node1", "holdfast.dev/unit", slog.New(slog.DiscardHandler))
	start := time.Now()
	list, src, err := kc.Members(context.Background(), dir, k1)
	if err != nil || len(list) != 1 || !strings.HasPrefix(src, "persisted") {
		t.Fatalf("offline start: %v from %q, %v; want the persisted list", list, src, err)
	}
	if took := time.Since(start); took > time.Second || calls.Load() != 0 {
		t.Fatalf("offline start took %v and made %d apiserver calls; want at once, none", took, calls.Load())
	}
	if _, _, err := kc.Members(context.Background(), t.TempDir(), k1); err == nil || !strings.Contains(err.Error(), "no persisted member list") {
		t.Fatalf("first start with the apiserver away: err %v, want one naming the missing persisted list", err)
	}
}
