package webhook

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/holdfast-edge/holdfast/internal/kubeclient"
)

// leaseServer is one namespace's Leases as the apiserver keeps them: every
// write bumps the resourceVersion and an Update with a stale one is a
// conflict. fail makes every call fail (an unreachable apiserver).
type leaseServer struct {
	kubeclient.Resource[*coordv1.Lease, *coordv1.LeaseList] // List, Watch, Patch, Delete: unused
	mu                                                      sync.Mutex
	leases                                                  map[string]*coordv1.Lease
	rv                                                      int
	fail                                                    atomic.Bool
}

var errUnreachable = errors.New("apiserver unreachable")

func (s *leaseServer) Get(_ context.Context, name string, _ metav1.GetOptions) (*coordv1.Lease, error) {
	if s.fail.Load() {
		return nil, errUnreachable
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leases[name]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, name)
	}
	return l.DeepCopy(), nil
}

func (s *leaseServer) Create(_ context.Context, l *coordv1.Lease, _ metav1.CreateOptions) (*coordv1.Lease, error) {
	if s.fail.Load() {
		return nil, errUnreachable
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.leases[l.Name]; ok {
		return nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "leases"}, l.Name)
	}
	return s.store(l), nil
}

func (s *leaseServer) Update(_ context.Context, l *coordv1.Lease, _ metav1.UpdateOptions) (*coordv1.Lease, error) {
	if s.fail.Load() {
		return nil, errUnreachable
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.leases[l.Name]; !ok || cur.ResourceVersion != l.ResourceVersion {
		return nil, apierrors.NewConflict(schema.GroupResource{Resource: "leases"}, l.Name, errors.New("stale resourceVersion"))
	}
	return s.store(l), nil
}

func (s *leaseServer) store(l *coordv1.Lease) *coordv1.Lease {
	s.rv++
	l = l.DeepCopy()
	l.ResourceVersion = strconv.Itoa(s.rv)
	s.leases[l.Name] = l
	return l.DeepCopy()
}

func (s *leaseServer) holder() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.leases["leader"]; l != nil && l.Spec.HolderIdentity != nil {
		return *l.Spec.HolderIdentity
	}
	return ""
}

func newLeaseServer() *leaseServer { return &leaseServer{leases: map[string]*coordv1.Lease{}} }

// candidate runs an Elector for id in the background; leading receives
// true when its lead starts and false when that lead's context ends.
type candidate struct {
	leading chan bool
	cancel  context.CancelFunc
	done    chan struct{}
}

func runCandidate(t *testing.T, s *leaseServer, id string, dur, deadline, retry time.Duration) *candidate {
	ctx, cancel := context.WithCancel(context.Background())
	c := &candidate{leading: make(chan bool, 10), cancel: cancel, done: make(chan struct{})}
	e := &Elector{Leases: s, Name: "leader", Identity: id, Duration: dur, RenewDeadline: deadline, Retry: retry}
	go func() {
		defer close(c.done)
		e.Run(ctx, func(ctx context.Context) {
			c.leading <- true
			<-ctx.Done()
			c.leading <- false
		})
	}()
	t.Cleanup(func() { cancel(); <-c.done })
	return c
}

// expect waits up to within for want on c.leading.
func (c *candidate) expect(t *testing.T, what string, want bool, within time.Duration) {
	t.Helper()
	select {
	case got := <-c.leading:
		if got != want {
			t.Fatalf("%s: leading=%v, want %v", what, got, want)
		}
	case <-time.After(within):
		t.Fatalf("%s: no change within %v", what, within)
	}
}

func (c *candidate) quiet(t *testing.T, what string, d time.Duration) {
	t.Helper()
	select {
	case got := <-c.leading:
		t.Fatalf("%s: leading=%v within %v", what, got, d)
	case <-time.After(d):
	}
}

// TestElectorHandsOverOnRelease: one replica leads at a time, and one that
// stops releases the Lease, so the next takes over in a retry period, not
// after the Lease's duration.
func TestElectorHandsOverOnRelease(t *testing.T) {
	s := newLeaseServer()
	a := runCandidate(t, s, "a", time.Minute, 10*time.Second, 20*time.Millisecond)
	a.expect(t, "a, first", true, 5*time.Second)
	b := runCandidate(t, s, "b", time.Minute, 10*time.Second, 20*time.Millisecond)
	b.quiet(t, "b while a holds the lease", 300*time.Millisecond)
	a.cancel()
	a.expect(t, "a, stopping", false, 5*time.Second)
	<-a.done
	b.expect(t, "b after a released", true, 5*time.Second) // a minute without the release
	if h := s.holder(); h != "b" {
		t.Fatalf("lease holder %q, want b", h)
	}
}

// TestElectorWaitsOutAnotherHolder: a Lease held by a replica that stopped
// renewing (a crashed pod: no release) is taken only after its duration,
// measured from when the candidate first saw it.
func TestElectorWaitsOutAnotherHolder(t *testing.T) {
	s := newLeaseServer()
	ghost, secs, now := "ghost", int32(1), metav1.NewMicroTime(time.Now())
	s.store(&coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "leader"}, Spec: coordv1.LeaseSpec{HolderIdentity: &ghost, LeaseDurationSeconds: &secs, RenewTime: &now}})
	start := time.Now()
	b := runCandidate(t, s, "b", time.Minute, 10*time.Second, 20*time.Millisecond)
	b.quiet(t, "b while ghost's lease is fresh", 700*time.Millisecond)
	b.expect(t, "b after ghost's lease expired", true, 5*time.Second)
	if d := time.Since(start); d < time.Second {
		t.Fatalf("took the lease after %v, before its 1 s duration", d)
	}
}

// TestElectorStopsLeadingWhenRenewalFails: a leader that cannot renew
// stops leading once RenewDeadline passed (its peers take over after the
// duration), and leads again when the apiserver is back.
func TestElectorStopsLeadingWhenRenewalFails(t *testing.T) {
	s := newLeaseServer()
	a := runCandidate(t, s, "a", time.Minute, 200*time.Millisecond, 20*time.Millisecond)
	a.expect(t, "a, first", true, 5*time.Second)
	s.fail.Store(true)
	a.expect(t, "a, renewals failing", false, 5*time.Second)
	a.quiet(t, "a while the apiserver is away", 300*time.Millisecond)
	s.fail.Store(false)
	a.expect(t, "a, apiserver back", true, 5*time.Second)
}
