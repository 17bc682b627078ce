package health

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"sync"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/holdfast-edge/holdfast/health/members"
	"github.com/holdfast-edge/holdfast/internal/kubeclient"
)

// Names shared with the webhook and the manifests.
const (
	Namespace           = "holdfast-system"
	LeasePrefix         = "holdfast-view-"
	PublicKeyAnnotation = "holdfast.dev/health-public-key"
	ViewAnnotation      = "holdfast.dev/view" // base64 signed full view (protocol message)
	UnitAnnotation      = "holdfast.dev/unit" // the writer's unit
	LeaseRenew          = 10 * time.Second    // a Lease is rewritten at least this often
	LeaseDuration       = 30                  // seconds a Lease view stays fresh
)

// Kube is the daemon's apiserver side: members from Node objects, its own
// public key published on its Node, and its own view written to its Lease.
type Kube struct {
	cs        kubeclient.Interface
	node      string
	unitLabel string
	log       *slog.Logger
}

// NewKube builds a client from a kubeconfig path (kubeclient's rule).
func NewKube(ctx context.Context, kubeconfig, node, unitLabel string, log *slog.Logger) (*Kube, error) {
	cs, err := kubeclient.Client(kubeconfig, "holdfastd-health")
	if err != nil {
		return nil, err
	}
	return NewKubeFromClient(cs, node, unitLabel, log), nil
}

// NewKubeFromClient wraps an existing client.
func NewKubeFromClient(cs kubeclient.Interface, node, unitLabel string, log *slog.Logger) *Kube {
	return &Kube{cs: cs, node: node, unitLabel: unitLabel, log: log}
}

// MembersFromNodes builds the member list from Node objects: unit from the
// label, address from the InternalIP, key from the annotation. Nodes without
// a key or an InternalIP are skipped (and named in the returned list of skips).
func MembersFromNodes(nodes []corev1.Node, unitLabel string) (list []members.Member, skipped []string) {
	for _, n := range nodes {
		ip := internalIP(&n)
		m := members.Member{Name: n.Name, Address: ip, Unit: n.Labels[unitLabel], PublicKey: n.Annotations[PublicKeyAnnotation]}
		if ip == "" || m.PublicKey == "" {
			skipped = append(skipped, n.Name)
			continue
		}
		if _, err := m.Key(); err != nil {
			skipped = append(skipped, n.Name)
			continue
		}
		list = append(list, m)
	}
	return list, skipped
}

// internalIP is the Node's first InternalIP ("" if none): a member's address.
func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// Members returns the member list to start with. A list persisted by an
// earlier run is used at once, without asking the apiserver: the daemon
// must be probing within moments of an offline reboot, since a node that
// stays silent while it waits for an unreachable apiserver is voted dead
// by its peers (and its pods evicted) before the wait ends. Follow then
// reconciles the list with the Nodes (and republishes the key) whenever
// the apiserver answers. Only a first start, with nothing persisted,
// publishes the key and lists the Nodes first.
func (k *Kube) Members(ctx context.Context, stateDir string, key ed25519.PrivateKey) ([]members.Member, string, error) {
	if st, err := LoadMembers(stateDir); err == nil {
		k.log.Info("starting with the persisted member list; following the Nodes in the background", "saved", st.Updated, "members", len(st.Members))
		return st.Members, "persisted " + st.Updated.Format(time.RFC3339), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		k.log.Warn("persisted member list refused; asking the apiserver", "err", err)
	}
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	perr := k.publish(lctx, base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)))
	nodes, lerr := k.cs.Nodes().List(lctx, metav1.ListOptions{})
	if perr != nil || lerr != nil {
		return nil, "", fmt.Errorf("apiserver unreachable and no persisted member list in %s: %w", stateDir, errors.Join(perr, lerr))
	}
	list, skipped := MembersFromNodes(nodes.Items, k.unitLabel)
	if len(skipped) > 0 {
		k.log.Warn("nodes without health key or InternalIP are not members", "nodes", skipped)
	}
	return list, "apiserver", nil
}

// publish sets this node's public key annotation on its Node.
func (k *Kube) publish(ctx context.Context, pub string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, PublicKeyAnnotation, pub)
	if _, err := k.cs.Nodes().Patch(ctx, k.node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patch Node %s: %w", k.node, err)
	}
	return nil
}

// LeaseWriter returns a ViewSink that writes this node's view to its Lease
// holdfast-view-<node> in holdfast-system when the view changed or
// LeaseRenew passed, in the background (latest view wins; a slow or
// unreachable apiserver never delays probing).
func (k *Kube) LeaseWriter(ctx context.Context) func([]byte, map[string]string) {
	type item struct {
		full []byte
		view map[string]string
	}
	var mu sync.Mutex
	var pending *item
	wake := make(chan struct{}, 1)
	var last map[string]string
	var lastAt time.Time
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-wake:
			}
			mu.Lock()
			it := pending
			pending = nil
			mu.Unlock()
			if it == nil {
				continue
			}
			if maps.Equal(it.view, last) && time.Since(lastAt) < LeaseRenew {
				continue
			}
			if err := k.writeLease(ctx, it.full); err != nil {
				k.log.Debug("write view lease", "err", err)
				continue
			}
			last, lastAt = it.view, time.Now()
		}
	}()
	return func(full []byte, view map[string]string) {
		mu.Lock()
		pending = &item{full, view}
		mu.Unlock()
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}

func (k *Kube) writeLease(ctx context.Context, full []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	leases := k.cs.Leases(Namespace)
	name := LeasePrefix + k.node
	now := metav1.NewMicroTime(time.Now())
	dur := int32(LeaseDuration)
	holder := k.node
	l, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace}}
		l.Annotations = map[string]string{ViewAnnotation: base64.StdEncoding.EncodeToString(full)}
		l.Spec = coordv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, RenewTime: &now}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[ViewAnnotation] = base64.StdEncoding.EncodeToString(full)
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &holder, &dur, &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}
