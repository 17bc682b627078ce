//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast-edge/holdfast/install/manifests"
	"github.com/holdfast-edge/holdfast/test/harness"
)

// node3's own plumbing (kube-proxy, flanneld, the holdfast agent: health and
// DNS, as DaemonSet pods) through the offline reboot and the reconnect (issue 14).

// dsSetup records node3's DaemonSet pods before the cut.
func (r *run) dsSetup(ctx context.Context) bool {
	pods, err := dsPodsOn(ctx, r.s.cs, r.victim.Name)
	if err == nil {
		var got []string
		for _, p := range pods {
			got = append(got, p.DS)
		}
		want := "holdfast-agent kube-flannel-ds-nftables kube-proxy-nftables"
		if strings.Join(got, " ") != want {
			err = fmt.Errorf("node3 runs DaemonSet pods of %v, want %s", got, want)
		}
	}
	r.ds = pods
	return r.rep.Check("scenario: node3 runs kube-proxy, flanneld (both nftables mode) and the holdfast agent (health and DNS) as DaemonSet pods", err)
}

// dsRelaunched waits until the shim has relaunched each of node3's
// DaemonSet pods (one ready sandbox, one running container) and records
// them.
func (r *run) dsRelaunched(ctx context.Context) {
	err := harness.Eventually(60*time.Second, func() error {
		var errs []error
		for _, p := range r.ds {
			cp, err := r.victim.criPod(ctx, p.UID)
			if err == nil && (len(cp.Ready) != 1 || len(cp.Running) != 1 || !slices.Contains(p.Apps, runningName(cp))) {
				err = fmt.Errorf("app container %v not running (yet): %s", p.Apps, cp)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s/%s: %w", p.NS, p.Name, err))
				continue
			}
			r.dsRelaunch[p.UID] = cp
		}
		return errors.Join(errs...)
	})
	r.rep.Check("reboot: the shim relaunched node3's DaemonSet pods (kube-proxy, flanneld, the agent) and they keep running offline", err)
}

// runningName is the name of a pod's one running container ("" if none).
func runningName(p criPod) string {
	for _, c := range p.Containers {
		if len(p.Running) == 1 && c.Id == p.Running[0] {
			return c.Metadata.GetName()
		}
	}
	return ""
}

// dsUnchanged checks that node3's DaemonSet pods run the containers the
// shim relaunched: in the CRI and, with apiserver, as the apiserver
// reports them after adoption (same container, restartCount as
// relaunched).
func (r *run) dsUnchanged(ctx context.Context, apiserver bool) error {
	var errs []error
	for _, p := range r.ds {
		was := r.dsRelaunch[p.UID]
		cp, err := r.victim.criPod(ctx, p.UID)
		if err == nil && (!equalIDs(cp.Ready, was.Ready) || !equalIDs(cp.Running, was.Running)) {
			err = fmt.Errorf("changed: now %s; relaunched %s", cp, was)
		}
		if err == nil && apiserver {
			var pod *corev1.Pod
			pod, err = r.s.cs.CoreV1().Pods(p.NS).Get(ctx, p.Name, metav1.GetOptions{})
			if err == nil {
				now := viewOf(pod)
				switch {
				case string(pod.UID) != p.UID:
					err = fmt.Errorf("uid %s, was %s", pod.UID, p.UID)
				case len(was.Running) != 1 || now.ContainerID != was.Running[0]:
					err = fmt.Errorf("apiserver reports container %s, relaunched %v", short(now.ContainerID), was.Running)
				case fmt.Sprint(now.Restarts) != was.Restarts:
					err = fmt.Errorf("restartCount %d, relaunched with %q", now.Restarts, was.Restarts)
				case !podReady(pod):
					err = fmt.Errorf("not ready%s", podWhy(pod))
				}
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", p.NS, p.Name, err))
		}
	}
	return errors.Join(errs...)
}

// lateService creates a Service after the reconnect and checks that a pod
// on node3 reaches it: node3's kube-proxy got it from the apiserver.
func (r *run) lateService(ctx context.Context) error {
	svc := Service(WebApp)
	svc.Name = "late"
	created, err := r.s.cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	c, err := harness.DialCRI(r.victim.ShimSock())
	if err != nil {
		return err
	}
	defer c.Close()
	var netns string
	for _, v := range r.before {
		if p := r.relaunched[v.UID]; len(p.Ready) == 1 {
			if _, ns, err := c.SandboxNet(ctx, p.Ready[0]); err == nil {
				netns = ns
				break
			}
		}
	}
	if netns == "" {
		return fmt.Errorf("no relaunched pod left on node3 to ask from")
	}
	ip := created.Spec.ClusterIP
	return harness.Eventually(60*time.Second, func() error {
		if err := harness.HTTP(ctx, netns, ip); err != nil {
			return fmt.Errorf("pod on node3 → Service late %s: %w (node3's kube-proxy map: %s)", ip, err, r.victim.nftHas(ctx, ip))
		}
		return nil
	})
}

// nftHas says whether node3's kube-proxy table maps ip (for messages).
func (n *Node) nftHas(ctx context.Context, ip string) string {
	out, err := n.Exec(ctx, "nft", "list", "map", "ip", "kube-proxy", "service-ips")
	if err != nil {
		return err.Error()
	}
	if strings.Contains(out, ip+" . ") {
		return "has " + ip
	}
	return "lacks " + ip
}

// fakeNode is a Node object with flannel's annotations, as flanneld on a
// new node would publish them, and no kubelet behind it: a change in the
// node set that every flanneld must follow (route, ARP and FDB entry for
// its VTEP). Its own health unit keeps it out of the others' quorum.
const fakeNode = "node9"

var fakeVTEP = "0e:00:00:00:00:09"

// nodeSetChange adds fakeNode and checks that node3's flanneld programs
// its FDB entry, then deletes it and checks the entry goes.
func (r *run) nodeSetChange(ctx context.Context) error {
	cs := r.s.cs
	ref, err := cs.CoreV1().Nodes().Get(ctx, r.peer.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	ann := map[string]string{}
	for k, v := range ref.Annotations {
		if strings.HasPrefix(k, "flannel.alpha.coreos.com/") {
			ann[k] = v
		}
	}
	var bd map[string]any
	if err := json.Unmarshal([]byte(ann["flannel.alpha.coreos.com/backend-data"]), &bd); err != nil {
		return fmt.Errorf("node1's flannel backend-data %q: %w", ann["flannel.alpha.coreos.com/backend-data"], err)
	}
	bd["VtepMAC"] = fakeVTEP
	b, _ := json.Marshal(bd)
	ann["flannel.alpha.coreos.com/backend-data"] = string(b)
	ann["flannel.alpha.coreos.com/public-ip"] = "198.51.100.19"
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: fakeNode, Annotations: ann, Labels: map[string]string{"holdfast.dev/unit": "e2e-fake"}},
		Spec:       corev1.NodeSpec{PodCIDR: "10.244.9.0/24", PodCIDRs: []string{"10.244.9.0/24"}},
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return err
	}
	defer cs.CoreV1().Nodes().Delete(context.Background(), fakeNode, metav1.DeleteOptions{})
	if err := r.victim.waitFDB(ctx, true); err != nil {
		return fmt.Errorf("node %s added: %w", fakeNode, err)
	}
	r.rep.Mark("node3 fdb", "node9's VTEP programmed")
	if err := cs.CoreV1().Nodes().Delete(ctx, fakeNode, metav1.DeleteOptions{}); err != nil {
		return err
	}
	if err := r.victim.waitFDB(ctx, false); err != nil {
		return fmt.Errorf("node %s deleted: %w", fakeNode, err)
	}
	return nil
}

// waitFDB waits until node's flannel.1 FDB has (or no longer has) the
// fake node's VTEP.
func (n *Node) waitFDB(ctx context.Context, want bool) error {
	return harness.Eventually(45*time.Second, func() error {
		out, err := n.Exec(ctx, "bridge", "fdb", "show", "dev", harness.VXLANDevice)
		if err != nil {
			return err
		}
		if has := strings.Contains(out, fakeVTEP); has != want {
			return fmt.Errorf("%s's %s FDB has %s: %v, want %v:\n%s", n.Name, harness.VXLANDevice, fakeVTEP, has, want, out)
		}
		return nil
	})
}

// healthLeaseRenewed waits until node3's health daemon writes its view
// Lease again after since (its token works).
func (r *run) healthLeaseRenewed(ctx context.Context, since time.Time) error {
	name := manifests.LeasePrefix + r.victim.Name
	return harness.Eventually(45*time.Second, func() error {
		l, err := r.s.cs.CoordinationV1().Leases(manifests.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if l.Spec.RenewTime == nil || !l.Spec.RenewTime.After(since) {
			return fmt.Errorf("lease %s renewed %v, not since the reconnect at %s", name, l.Spec.RenewTime, since.Format(time.TimeOnly))
		}
		return nil
	})
}
