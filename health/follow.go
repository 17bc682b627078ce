package health

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/holdfast-edge/holdfast/health/members"
	"github.com/holdfast-edge/holdfast/internal/kubeclient"
)

// FollowOptions tune Follow; zero values are the defaults.
type FollowOptions struct {
	// Debounce: a burst of Node changes (every daemon of a cluster
	// publishing its key at boot, a rollout relabelling nodes) is one
	// recompute, this long after its first change. Default 1 s.
	Debounce time.Duration
	// Resync: the informer's resync period, the safety net that recomputes
	// even without an event (and re-publishes a key a failed patch left
	// out). Default 10 min.
	Resync time.Duration
	// Retry: how soon a failed key publication is retried. Default 10 s.
	Retry time.Duration
}

func (o *FollowOptions) defaults() {
	if o.Debounce <= 0 {
		o.Debounce = time.Second
	}
	if o.Resync <= 0 {
		o.Resync = 10 * time.Minute
	}
	if o.Retry <= 0 {
		o.Retry = 10 * time.Second
	}
}

// Follow keeps the member list current until ctx ends: it watches Nodes and,
// after the first full list and after every burst of changes that can
// change the list (a node's key, InternalIP or unit label; a node added or
// deleted), recomputes the list with MembersFromNodes and passes it to
// apply (the daemon ignores a list that leaves its unit unchanged). When
// this node's own Node lacks its key (a re-registered Node, or the patch at
// start failed while the apiserver was away) it publishes it first. An
// unreachable apiserver is retried by the informer: the list in use stays
// until the watch is back.
func (k *Kube) Follow(ctx context.Context, key ed25519.PrivateKey, opts FollowOptions, apply func([]members.Member) error) {
	opts.defaults()
	pub := base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
	inf := kubeclient.Informer(k.cs.Nodes(), &corev1.Node{}, opts.Resync)
	kick := make(chan struct{}, 1)
	signal := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if err := inf.SetTransform(slimNode); err != nil {
		k.log.Error("node informer transform", "err", err) // only fails after Start
	}
	inf.AddEventHandler(nodeEvents(k.unitLabel, signal))
	inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		k.log.Warn("watch Nodes failed; keeping the member list in use", "err", err)
	})
	defer kubeclient.Start(ctx, inf)()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return
	}
	k.log.Info("following Node changes for the member list")
	var skipped []string
	for {
		select { // this recompute covers every change seen so far
		case <-kick:
		default:
		}
		if !k.followOnce(ctx, listersv1.NewNodeLister(inf.GetIndexer()), pub, &skipped, apply) {
			time.AfterFunc(opts.Retry, signal)
		}
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(opts.Debounce):
		}
	}
}

// slimNode is the Node informer's transform: the member list reads labels,
// annotations and addresses, never managed fields or the image list (50
// images of a node are kilobytes per Node, kept per Node of the cluster).
func slimNode(o any) (any, error) {
	o, _ = kubeclient.TrimManagedFields(o)
	if n, ok := o.(*corev1.Node); ok {
		n.Status.Images = nil
	}
	return o, nil
}

// nodeEvents signals on every Node event that can change the member list,
// and on resyncs.
func nodeEvents(unitLabel string, signal func()) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { signal() },
		DeleteFunc: func(any) { signal() },
		UpdateFunc: func(o, n any) {
			old, ok1 := o.(*corev1.Node)
			cur, ok2 := n.(*corev1.Node)
			// Kubelets update their Node's status all the time; only a
			// change of what MembersFromNodes reads, or a resync (same
			// resourceVersion), is worth a recompute.
			if !ok1 || !ok2 || old.ResourceVersion == cur.ResourceVersion || memberFields(old, unitLabel) != memberFields(cur, unitLabel) {
				signal()
			}
		},
	}
}

// memberFields is what MembersFromNodes reads from a Node.
func memberFields(n *corev1.Node, unitLabel string) [3]string {
	return [3]string{n.Labels[unitLabel], n.Annotations[PublicKeyAnnotation], internalIP(n)}
}

// followOnce recomputes the member list from the informer's cache and
// applies it. It reports false when this node's key needed publishing and
// that failed (the caller retries).
func (k *Kube) followOnce(ctx context.Context, lister listersv1.NodeLister, pub string, skipped *[]string, apply func([]members.Member) error) bool {
	ptrs, err := lister.List(labels.Everything())
	if err != nil {
		k.log.Warn("list Nodes from the informer cache", "err", err)
		return true
	}
	nodes := make([]corev1.Node, 0, len(ptrs))
	for _, n := range ptrs {
		if n.Name == k.node && n.Annotations[PublicKeyAnnotation] != pub {
			// Publishing changes the Node: the update event brings the
			// list with this node in it.
			if err := k.publish(ctx, pub); err != nil {
				k.log.Warn("publish this node's health key", "err", err)
				return false
			}
			k.log.Info("published this node's health key on its Node (it was missing or different)")
			return true
		}
		nodes = append(nodes, *n)
	}
	slices.SortFunc(nodes, func(a, b corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	list, skip := MembersFromNodes(nodes, k.unitLabel)
	if !slices.Equal(skip, *skipped) {
		if len(skip) > 0 {
			k.log.Warn("nodes without health key or InternalIP are not members", "nodes", skip)
		}
		*skipped = skip
	}
	if err := apply(list); err != nil {
		k.log.Warn("member list from Nodes not applied; keeping the one in use", "err", err)
	}
	return true
}
