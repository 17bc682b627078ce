//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// podView is one pod as the apiserver and the node's CRI see it.
type podView struct {
	Name, UID, Node, IP string
	ContainerID         string // apiserver's containerStatuses[0].containerID, without the runtime prefix
	Restarts            int32
}

func viewOf(p *corev1.Pod) podView {
	v := podView{Name: p.Name, UID: string(p.UID), Node: p.Spec.NodeName, IP: p.Status.PodIP}
	if len(p.Status.ContainerStatuses) > 0 {
		cs := p.Status.ContainerStatuses[0]
		v.ContainerID = strings.TrimPrefix(cs.ContainerID, "containerd://")
		v.Restarts = cs.RestartCount
	}
	return v
}

// criPod is what the node's runtime (through the shim) holds for one pod UID.
type criPod struct {
	Ready      []string // ready sandbox ids
	All        int      // sandboxes in any state
	IP         string   // of the ready sandbox
	Running    []string // running container ids
	Restarts   string   // restartCount annotation of the running container
	Containers []*runtimeapi.Container
	Sandboxes  []*runtimeapi.PodSandbox
}

func (n *Node) criPod(ctx context.Context, uid string) (criPod, error) {
	var out criPod
	c, err := harness.DialCRI(n.ShimSock())
	if err != nil {
		return out, err
	}
	defer c.Close()
	sbs, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		LabelSelector: map[string]string{harness.LabelPodUID: uid}}})
	if err != nil {
		return out, err
	}
	out.Sandboxes = sbs.Items
	out.All = len(sbs.Items)
	for _, sb := range sbs.Items {
		if sb.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			out.Ready = append(out.Ready, sb.Id)
		}
	}
	if len(out.Ready) == 1 {
		out.IP, _, err = c.SandboxNet(ctx, out.Ready[0])
		if err != nil {
			return out, err
		}
	}
	cts, err := c.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		LabelSelector: map[string]string{harness.LabelPodUID: uid}}})
	if err != nil {
		return out, err
	}
	out.Containers = cts.Containers
	for _, ct := range cts.Containers {
		if ct.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			out.Running = append(out.Running, ct.Id)
			out.Restarts = ct.Annotations[harness.AnnRestartCount]
		}
	}
	sort.Strings(out.Running)
	return out, nil
}

func (p criPod) String() string {
	var sb []string
	for _, s := range p.Sandboxes {
		sb = append(sb, fmt.Sprintf("%s(%s attempt %d created %s)", short(s.Id), s.State, s.Metadata.GetAttempt(), time.Unix(0, s.CreatedAt).Format("15:04:05.000")))
	}
	var ct []string
	for _, c := range p.Containers {
		ct = append(ct, fmt.Sprintf("%s(%s %s attempt %d restartCount=%s sandbox %s)", short(c.Id), c.Metadata.GetName(), c.State, c.Metadata.GetAttempt(),
			c.Annotations[harness.AnnRestartCount], short(c.PodSandboxId)))
	}
	return fmt.Sprintf("sandboxes [%s] containers [%s]", strings.Join(sb, " "), strings.Join(ct, " "))
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// run is the state the phases of the scenario share.
type run struct {
	s            *site
	rep          *Report
	victim, peer *Node     // node3, node1
	before       []podView // node3's pods (both workloads) before the cut
	clusterIP    string    // of web
	db           []corev1.Pod
	notReadyAt   time.Time
	rebootAt     time.Time
	relaunched   map[string]criPod
	vtepBefore   string
	// issue 19 (autonomy.go)
	auto         *autonomy
	duration     *durationWatch
	durationPods []podView
	// issue 14 (plumbing.go, volumes.go)
	ds          []nodePod
	dsRelaunch  map[string]criPod
	vols        volsState
	reconnectAt time.Time
}

// scenario runs the phases of issue 10 after the baseline: cut node3's
// cloud link (2), reboot it while cut (3), reconnect it (4), partition the
// site {node1,node2} | {node3} (6), power node2 off for good (5).
func scenario(t interface {
	Logf(string, ...any)
}, ctx context.Context, rep *Report, s *site) {
	r := &run{s: s, rep: rep, victim: s.node("node3"), peer: s.node("node1"), relaunched: map[string]criPod{}, dsRelaunch: map[string]criPod{}}
	if !r.setup(ctx) || !r.dsSetup(ctx) || !r.setupOptOut(ctx) || !r.cut(ctx) || !r.reboot(ctx) {
		r.diagnose(t)
		return
	}
	if r.reconnect(ctx) {
		r.partition(ctx)
		r.autonomyDuration(ctx)
		r.powerOff(ctx)
		r.alwaysRetain(ctx)
	}
	r.diagnose(t)
}

func (r *run) diagnose(t interface{ Logf(string, ...any) }) {
	if !r.rep.OK() {
		t.Logf("node3 kubelet pod decisions:\n%s", kubeletDecisions(r.victim, r.before))
		t.Logf("CRI calls that reached node3's containerd (from kubelet through the shim, or from the shim's relaunch):\n%s", criCalls(r.victim, r.before))
	}
}

func (r *run) setup(ctx context.Context) bool {
	pods, err := r.s.workloadPods(ctx)
	if err == nil {
		var web *corev1.Service
		web, err = r.s.cs.CoreV1().Services("default").Get(ctx, WebApp, metav1.GetOptions{})
		if err == nil {
			r.clusterIP = web.Spec.ClusterIP
		}
	}
	if !r.rep.Check("scenario: list pods and Services", err) {
		return false
	}
	r.db = podsOfApp(pods, DBApp)
	r.before = onNode(views(pods), r.victim.Name)
	r.volsBefore(ctx)
	return r.rep.Check("scenario: node3 runs pods of both workloads", condErr(len(podsOn(r.before, WebApp)) > 0 && len(podsOn(r.before, DBApp)) > 0,
		fmt.Sprintf("node3 runs %v", r.before)))
}

// podsOn filters views by workload (pod name prefix).
func podsOn(vs []podView, app string) []podView {
	var out []podView
	for _, v := range vs {
		if strings.HasPrefix(v.Name, app+"-") {
			out = append(out, v)
		}
	}
	return out
}

func names(vs []podView) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Name)
	}
	return out
}

// cut is phase 2: node3's cloud link cut past the grace period. The cloud
// sees node3 NotReady and its pods not ready; the peers vote it alive, so
// the webhook keeps its endpoints ready and Services keep reaching it.
func (r *run) cut(ctx context.Context) bool {
	s, rep, victim := r.s, r.rep, r.victim
	if err := victim.CutCloud(); err != nil {
		rep.Check("cut: cloud link of node3 cut", err)
		return false
	}
	cutAt := time.Now()
	rep.Mark("node3 cloud cut", fmt.Sprintf("grace period %v, tolerationSeconds %d", s.cloud.GracePeriod, s.cloud.TolerationSeconds))
	rep.Check("cut: node3 goes NotReady/Unknown after the grace period", WaitNodeNotReady(ctx, s.cs, victim.Name, s.cloud.GracePeriod+40*time.Second))
	r.notReadyAt = time.Now()
	rep.Mark("node3 not ready", fmt.Sprintf("%.1fs after the cut", time.Since(cutAt).Seconds()))
	rep.Check("cut: node3's containers keep running (CRI)", checkPods(ctx, victim, r.before, func(v podView, p criPod) error {
		if len(p.Running) != 1 || p.Running[0] != v.ContainerID {
			return fmt.Errorf("running %v, apiserver had %s", p.Running, short(v.ContainerID))
		}
		return nil
	}))
	rep.Check("cut: node3's pods still exist in the apiserver (same UIDs)", samePods(ctx, s, r.before))
	rep.Check("cut: node1 and node2 vote node3 alive", WaitVerdicts(ctx, []*Node{s.node("node1"), s.node("node2")}, map[string]string{victim.Name: "alive"}, 15*time.Second))
	rep.Check("cut: the cloud marks node3's pods not ready (node lifecycle controller)", harness.Eventually(30*time.Second, func() error {
		return podsReady(ctx, s, r.before, false)
	}))
	rep.Check("cut: node3's endpoints stay ready in the EndpointSlices (webhook applied the alive verdict)", harness.Eventually(30*time.Second, func() error {
		return r.endpointsKept(ctx)
	}))
	rep.Mark("node3 endpoints kept", "EndpointSlices ready, pods NotReady in the cloud")
	rep.Check("cut: node1 reaches node3's web pods through the ClusterIP", r.serviceReaches(ctx, r.peer, podsOn(r.before, WebApp)))
	rep.Check("cut: a pod on node1 reaches node3's db pod by name", r.reachFromPeer(ctx, dbTargets(podsOn(r.before, DBApp))))
	r.cutShown(ctx)
	return true
}

// reachFromPeer checks that node1's web pods reach targets by name.
func (r *run) reachFromPeer(ctx context.Context, targets []target) error {
	pods, err := PodsOf(ctx, r.s.cs, "default", WebApp)
	if err != nil {
		return err
	}
	return r.s.reachByName(ctx, onNode(views(pods), r.peer.Name), targets)
}

// endpointsKept checks that node3's pod IPs are ready endpoints in their
// Services' EndpointSlices and that the webhook is what made them so.
func (r *run) endpointsKept(ctx context.Context) error {
	n, err := r.s.cloud.WebhookPatches(ctx, "EndpointSlice")
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("the webhook has patched no EndpointSlice yet")
	}
	return endpointsReady(ctx, r.s, r.before, true)
}

// serviceReaches asks web's ClusterIP from node n until each of want has
// answered (kube-proxy picks endpoints at random).
func (r *run) serviceReaches(ctx context.Context, n *Node, want []podView) error {
	return harness.Eventually(20*time.Second, func() error {
		got, err := answeredBy(ctx, n.NSPath, r.clusterIP, 40)
		if err != nil {
			return err
		}
		for _, v := range want {
			if got[v.Name] == 0 {
				return fmt.Errorf("%s not among the pods answering %s from %s: %v", v.Name, r.clusterIP, n.Name, got)
			}
		}
		return nil
	})
}

// reboot is phase 3: node3 rebooted while cut. The boot sequence of
// docs/boot.md runs offline; the shim relaunches the pods with the same
// IPs, the overlay comes back with the same VTEP MAC, holdfast DNS answers
// from its snapshot.
func (r *run) reboot(ctx context.Context) bool {
	s, rep, victim := r.s, r.rep, r.victim
	if err := victim.WaitSnapshot(ctx); err != nil {
		rep.Check("reboot: node3 has a network snapshot", err)
		return false
	}
	r.vtepBefore = linkMAC(victim, harness.VXLANDevice)
	r.rebootAt = time.Now()
	rep.Mark("node3 reboot", "processes killed, netns and /run wiped, cloud still cut")
	var restoreErr error
	err := victim.Reboot(func() error {
		var err error
		restoreErr, err = r.bootSequence(ctx)
		return err
	})
	rep.Check("reboot: holdfastd snapshot restore succeeded", restoreErr)
	if !rep.Check("reboot: offline boot sequence ran (restore, containerd, shim relaunching every pod, snapshot watch, kubelet)", err) {
		return false
	}
	rep.Mark("node3 kubelet started", "offline")
	err = harness.Eventually(60*time.Second, func() error {
		return checkPods(ctx, victim, r.before, func(v podView, p criPod) error {
			if len(p.Ready) != 1 || len(p.Running) != 1 {
				return fmt.Errorf("not relaunched yet: %s", p)
			}
			if p.IP != v.IP {
				return fmt.Errorf("IP %s, was %s", p.IP, v.IP)
			}
			r.relaunched[v.UID] = p
			return nil
		})
	})
	rep.Check("reboot: node3's pods relaunched by the shim with the same IPs", err)
	rep.Mark("node3 pods relaunched", fmt.Sprintf("%d pods, %.1fs after the reboot", len(r.relaunched), time.Since(r.rebootAt).Seconds()))
	r.dsRelaunched(ctx)
	r.volsRelaunched(ctx)
	rep.Check("reboot: VTEP MAC of node3 kept", r.vtepKept())
	rep.Check("reboot: node1 reaches node3's pods", reachPods(ctx, r.peer, r.before))
	rep.Check("reboot: node3's pods reach the ClusterIP offline (restored kube-proxy rules)", r.relaunchedReachService(ctx))
	rep.Check("reboot: node3's pods resolve and reach web, db and each db pod by name offline (holdfast DNS from its snapshot)",
		s.reachByName(ctx, r.before, serviceTargets(r.db)))
	rep.Check("reboot: node1 reaches node3's relaunched web pods through the ClusterIP", r.serviceReaches(ctx, r.peer, podsOn(r.before, WebApp)))
	rep.Check("reboot: node1 and node2 vote node3 alive after its reboot", WaitVerdicts(ctx, []*Node{s.node("node1"), s.node("node2")}, map[string]string{victim.Name: "alive"}, 15*time.Second))

	// Offline, kubelet must kill nothing: an observation window (not a
	// readiness wait) that gives it time to try.
	time.Sleep(20 * time.Second)
	rep.Check("reboot: offline kubelet leaves the relaunched pods alone, DaemonSet pods included (20s)", errors.Join(checkPods(ctx, victim, r.before, func(v podView, p criPod) error {
		was := r.relaunched[v.UID]
		if !equalIDs(p.Ready, was.Ready) || !equalIDs(p.Running, was.Running) {
			return fmt.Errorf("changed: now %s; relaunched %s", p, was)
		}
		return nil
	}), r.dsUnchanged(ctx, false)))
	r.noEviction(ctx)
	r.optOutShown(ctx)
	return true
}

// bootSequence is docs/boot.md as the systemd units order it. A failed
// restore oneshot does not stop the units ordered after it (Before=, no
// Requires=), so the boot goes on and the later phases still show what the
// node does without the restored state.
func (r *run) bootSequence(ctx context.Context) (restoreErr, err error) {
	victim := r.victim
	if err := victim.CutCloud(); err != nil { // the netns (and its iptables) is new
		return nil, err
	}
	// /run is tmpfs: /run/flannel starts empty (and is flanneld's pod's
	// host dir again).
	if err := victim.linkRunFlannel(); err != nil {
		return nil, err
	}
	if err := victim.ShareKubeletRoot(); err != nil {
		return nil, err
	}
	out, restoreErr := victim.Restore(ctx)
	r.rep.Mark("node3 snapshot restore", firstLines(strings.TrimSpace(out), 1))
	r.rep.Check("reboot: restore put back node3's kube-proxy and flanneld nftables tables as captured (kube-proxy's maps web's ClusterIP) before they start", r.nftablesRestored(ctx, out))
	if err := victim.StartContainerd(); err != nil {
		return restoreErr, err
	}
	// The node's network configuration (its default route on a real
	// node), before the shim relaunches kube-proxy and the pods.
	if err := victim.RouteServices(ctx); err != nil {
		return restoreErr, err
	}
	if err := victim.StartShim(); err != nil {
		return restoreErr, fmt.Errorf("start shim: %w\n%s", err, victim.Logs("cri-shim"))
	}
	r.rep.Mark("node3 shim serving", "containerd up; the shim relaunches every pod, the DaemonSets' included")
	for _, start := range []func() error{victim.StartWatch, victim.StartKubelet} {
		if err := start(); err != nil {
			return restoreErr, err
		}
	}
	return restoreErr, nil
}

func (r *run) vtepKept() error {
	now := linkMAC(r.victim, harness.VXLANDevice)
	return condErr(r.vtepBefore != "" && now == r.vtepBefore, fmt.Sprintf("flannel.1 MAC %q, was %q", now, r.vtepBefore))
}

// relaunchedReachService checks TCP to the ClusterIP from node3 and from
// each relaunched pod's netns.
func (r *run) relaunchedReachService(ctx context.Context) error {
	c, err := harness.DialCRI(r.victim.ShimSock())
	if err != nil {
		return err
	}
	defer c.Close()
	netns := map[string]string{}
	for _, v := range r.before {
		if p := r.relaunched[v.UID]; len(p.Ready) == 1 {
			if _, netns[v.Name], err = c.SandboxNet(ctx, p.Ready[0]); err != nil {
				return err
			}
		}
	}
	return reachService(ctx, r.clusterIP, []*Node{r.victim}, netns)
}

// noEviction waits until tolerationSeconds (+10 s) have passed since node3
// went NotReady and checks that its pods were not evicted: no NoExecute
// taint on the Node (the webhook removed what the node lifecycle
// controller added), the same pods, endpoints still ready.
func (r *run) noEviction(ctx context.Context) {
	s := r.s
	wait := time.Duration(s.cloud.TolerationSeconds+10)*time.Second - time.Since(r.notReadyAt)
	if wait > 0 {
		time.Sleep(wait)
	}
	since := time.Since(r.notReadyAt).Round(time.Second)
	err := noExecuteTaints(ctx, s, r.victim.Name, false)
	if err == nil {
		err = samePods(ctx, s, r.before)
	}
	if err == nil {
		var n int
		if n, err = s.cloud.WebhookPatches(ctx, "Node"); err == nil && n == 0 {
			err = fmt.Errorf("the webhook never patched a Node: the controller never tried to taint node3?")
		}
	}
	rep := r.rep
	rep.Check(fmt.Sprintf("cut: no NoExecute taint, no eviction of node3's pods %v after NotReady (tolerationSeconds %d)", since, s.cloud.TolerationSeconds), err)
	rep.Check("cut: node3's endpoints still ready in the EndpointSlices", endpointsReady(ctx, s, r.before, true))
	rep.Mark("node3 not evicted", fmt.Sprintf("%v after NotReady", since))
}

// reconnect is phase 4: node3's cloud link back; kubelet adopts the
// relaunched pods.
func (r *run) reconnect(ctx context.Context) bool {
	s, rep, victim := r.s, r.rep, r.victim
	if err := victim.RestoreCloud(); err != nil {
		rep.Check("reconnect: cloud link restored", err)
		return false
	}
	reconnectAt := time.Now()
	r.reconnectAt = reconnectAt
	rep.Mark("node3 cloud restored", "")
	rep.Check("reconnect: node3 Ready again", WaitNodesReady(ctx, s.cs, []string{victim.Name}, 90*time.Second))
	rep.Mark("node3 ready", fmt.Sprintf("%.1fs after reconnect", time.Since(reconnectAt).Seconds()))
	// Let kubelet sync every pod (syncFrequency 10s) and report status.
	err := harness.Eventually(60*time.Second, func() error {
		return samePodsAdopted(ctx, s, r.before, r.relaunched)
	})
	rep.Mark("node3 pods reported", fmt.Sprintf("%.1fs after reconnect", time.Since(reconnectAt).Seconds()))
	// An observation window, not a readiness wait: adoption must change
	// nothing over 20 s more of kubelet syncs.
	time.Sleep(20 * time.Second)
	err2 := samePodsAdopted(ctx, s, r.before, r.relaunched)
	rep.Check("reconnect: apiserver shows the relaunched containers, same pods, restartCount = before+1 (the relaunch) and unchanged by adoption", errors.Join(err, err2))
	rep.Check("reconnect: container IDs unchanged, no second sandbox (CRI)", checkPods(ctx, victim, r.before, func(v podView, p criPod) error {
		was := r.relaunched[v.UID]
		if !equalIDs(p.Ready, was.Ready) || !equalIDs(p.Running, was.Running) {
			return fmt.Errorf("changed after reconnect: now %s; relaunched %s", p, was)
		}
		created := 0
		for _, sb := range p.Sandboxes {
			if time.Unix(0, sb.CreatedAt).After(r.rebootAt) {
				created++
			}
		}
		if created != 1 {
			return fmt.Errorf("%d sandboxes created since the reboot: %s", created, p)
		}
		return nil
	}))
	_, err = WaitPodsRunning(ctx, s.cs, "default", WebApp, 6, s.nodeNames(), 30*time.Second)
	if err == nil {
		_, err = WaitPodsRunning(ctx, s.cs, "default", DBApp, 3, s.nodeNames(), 30*time.Second)
	}
	rep.Check("reconnect: Deployment and StatefulSet fully running on every node", err)
	rep.Check("reconnect: flanneld kept node3's VTEP MAC", r.vtepKept())
	rep.Check("reconnect: node1 reaches node3's pods", reachPods(ctx, r.peer, r.before))
	rep.Check("reconnect: node3's DaemonSet pods adopted: the relaunched containers, restartCount unchanged, Ready (nothing restarted)", r.dsUnchanged(ctx, true))
	rep.Check("reconnect: node3's host daemons still running (containerd, shim, snapshot watch, kubelet)", daemonsAlive(victim, r.daemons()))
	rep.Check("reconnect: a Service created after the reconnect is reachable from a pod on node3 (node3's kube-proxy talks to the apiserver)", r.lateService(ctx))
	rep.Check("reconnect: a node added and removed reaches node3's flannel.1 FDB (node3's flanneld talks to the apiserver)", r.nodeSetChange(ctx))
	rep.Check("reconnect: node3's health daemon writes its view Lease again (its token works)", r.healthLeaseRenewed(ctx, reconnectAt))
	r.volsAdopted(ctx)
	rep.Check("reconnect: still nothing restarted on node3 (DaemonSet pods)", r.dsUnchanged(ctx, true))
	r.reconnectShown(ctx)
	return rep.OK()
}

func (r *run) daemons() map[string]string {
	return map[string]string{
		"containerd":     "containerd --config",
		"cri-shim":       "holdfastd cri run",
		"snapshot-watch": "holdfastd snapshot watch",
		"kubelet":        r.s.cloud.Bins.Kubelet + " ",
	}
}

// partition is phase 6: {node1,node2} | {node3} on the site LAN. The
// majority keeps its quorum and votes node3 dead; node3, alone, has no
// quorum and reports unknown; node1's DNS stops answering node3's db pod
// until the partition heals.
func (r *run) partition(ctx context.Context) {
	s, rep := r.s, r.rep
	n1, n2, n3 := s.node("node1"), s.node("node2"), r.victim
	dbOn3 := podsOn(r.before, DBApp)
	if err := s.Partition([]*harness.Node{n1.Node.Node, n2.Node.Node}, []*harness.Node{n3.Node.Node}); err != nil {
		rep.Check("partition: {node1,node2} | {node3}", err)
		return
	}
	at := time.Now()
	rep.Mark("partition", "{node1,node2} | {node3}")
	rep.Check("partition: node1 and node2 vote node3 dead, each other alive", WaitVerdicts(ctx, []*Node{n1, n2},
		map[string]string{"node1": "alive", "node2": "alive", "node3": "dead"}, 20*time.Second))
	rep.Mark("node3 voted dead", fmt.Sprintf("%.1fs after the partition", time.Since(at).Seconds()))
	rep.Check("partition: node3 (alone, no quorum) reports unknown for every node", WaitVerdicts(ctx, []*Node{n3},
		map[string]string{"node1": "unknown", "node2": "unknown", "node3": "unknown"}, 20*time.Second))
	rep.Check("partition: node1's DNS drops node3's db pod from db's answer", dbAnswer(ctx, n1, r.db, dbOn3, false))
	if err := s.Heal(); err != nil {
		rep.Check("partition healed", err)
		return
	}
	rep.Mark("partition healed", "")
	all := map[string]string{"node1": "alive", "node2": "alive", "node3": "alive"}
	rep.Check("partition healed: every node votes every node alive again", WaitVerdicts(ctx, s.nodes, all, 30*time.Second))
	rep.Check("partition healed: node1's DNS answers node3's db pod again", dbAnswer(ctx, n1, r.db, dbOn3, true))
}

// powerOff is phase 5: node2 killed and never restored. Its peers vote it
// dead, so the webhook leaves Kubernetes alone: NoExecute taint, eviction
// after tolerationSeconds, endpoints removed; holdfast DNS drops it too.
func (r *run) powerOff(ctx context.Context) {
	s, rep := r.s, r.rep
	n2 := s.node("node2")
	pods, err := s.workloadPods(ctx)
	if !rep.Check("power-off: list pods", err) {
		return
	}
	on2 := onNode(views(pods), n2.Name)
	if !rep.Check("power-off: node2 runs pods of both workloads", condErr(len(podsOn(on2, WebApp)) > 0 && len(podsOn(on2, DBApp)) > 0,
		fmt.Sprintf("node2 runs %v", on2))) {
		return
	}
	if err := n2.PowerOff(); err != nil {
		rep.Check("power-off: node2 powered off", err)
		return
	}
	at := time.Now()
	rep.Mark("node2 powered off", fmt.Sprintf("pods %v", names(on2)))
	live := []*Node{s.node("node1"), r.victim}
	rep.Check("power-off: node1 and node3 vote node2 dead", WaitVerdicts(ctx, live, map[string]string{"node2": "dead"}, 20*time.Second))
	rep.Mark("node2 voted dead", fmt.Sprintf("%.1fs after power-off", time.Since(at).Seconds()))
	rep.Check("power-off: node1's DNS drops node2's db pod", dbAnswer(ctx, s.node("node1"), r.db, podsOn(on2, DBApp), false))
	rep.Check("power-off: node2 goes NotReady", WaitNodeNotReady(ctx, s.cs, n2.Name, s.cloud.GracePeriod+40*time.Second))
	rep.Mark("node2 not ready", fmt.Sprintf("%.1fs after power-off", time.Since(at).Seconds()))
	rep.Check("power-off: node2 gets the NoExecute taint (the webhook leaves a dead node alone)", harness.Eventually(30*time.Second, func() error {
		return noExecuteTaints(ctx, s, n2.Name, true)
	}))
	rep.Check("power-off: node2's pods evicted (deletion started) after tolerationSeconds", harness.Eventually(time.Duration(s.cloud.TolerationSeconds+40)*time.Second, func() error {
		return deletionStarted(ctx, s, on2)
	}))
	rep.Mark("node2 pods evicted", fmt.Sprintf("%.1fs after power-off", time.Since(at).Seconds()))
	rep.Check("power-off: node2's endpoints no longer ready in the EndpointSlices", harness.Eventually(30*time.Second, func() error {
		return endpointsReady(ctx, s, on2, false)
	}))
	rep.Check("power-off: node1's ClusterIP answers come only from live nodes", harness.Eventually(20*time.Second, func() error {
		got, err := answeredBy(ctx, s.node("node1").NSPath, r.clusterIP, 30)
		if err != nil {
			return err
		}
		for _, v := range on2 {
			if got[v.Name] > 0 {
				return fmt.Errorf("%s (on node2) still answers: %v", v.Name, got)
			}
		}
		return nil
	}))
}

// checkPods applies f to each pod's CRI view on node n.
func checkPods(ctx context.Context, n *Node, pods []podView, f func(podView, criPod) error) error {
	var errs []error
	for _, v := range pods {
		p, err := n.criPod(ctx, v.UID)
		if err == nil {
			err = f(v, p)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (uid %s): %w", v.Name, v.UID, err))
		}
	}
	return errors.Join(errs...)
}

// samePods checks that the pods still exist with the same UIDs and no
// deletion timestamp.
func samePods(ctx context.Context, s *site, before []podView) error {
	pods, err := s.workloadPods(ctx)
	if err != nil {
		return err
	}
	byName := map[string]*corev1.Pod{}
	for i := range pods {
		byName[pods[i].Name] = &pods[i]
	}
	var errs []error
	for _, v := range before {
		p := byName[v.Name]
		switch {
		case p == nil:
			errs = append(errs, fmt.Errorf("%s gone", v.Name))
		case string(p.UID) != v.UID:
			errs = append(errs, fmt.Errorf("%s has uid %s, was %s", v.Name, p.UID, v.UID))
		case p.DeletionTimestamp != nil:
			errs = append(errs, fmt.Errorf("%s is being deleted (%v)", v.Name, p.DeletionTimestamp))
		}
	}
	return errors.Join(errs...)
}

// samePodsAdopted checks the apiserver's view after the reconnect: the same
// pods, Running and Ready, reporting the relaunched container, with the
// restart count they had before the cut.
func samePodsAdopted(ctx context.Context, s *site, before []podView, relaunched map[string]criPod) error {
	if err := samePods(ctx, s, before); err != nil {
		return err
	}
	pods, err := s.workloadPods(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for i := range pods {
		p := &pods[i]
		for _, v := range before {
			if v.Name != p.Name {
				continue
			}
			now := viewOf(p)
			want, wantRestarts := "", ""
			if r := relaunched[v.UID]; len(r.Running) == 1 {
				want, wantRestarts = r.Running[0], r.Restarts
			}
			switch {
			case p.Status.Phase != corev1.PodRunning || !podReady(p):
				errs = append(errs, fmt.Errorf("%s: %s%s", p.Name, p.Status.Phase, podWhy(p)))
			case now.ContainerID != want:
				errs = append(errs, fmt.Errorf("%s: apiserver reports container %s, relaunched %s", p.Name, short(now.ContainerID), short(want)))
			// The shim's relaunch is the one restart the reboot causes
			// (attempt+1, as kubelet itself would count it); adoption must
			// not add another.
			case fmt.Sprint(now.Restarts) != wantRestarts || now.Restarts != v.Restarts+1:
				errs = append(errs, fmt.Errorf("%s: restartCount %d; before the cut %d, relaunched with %q", p.Name, now.Restarts, v.Restarts, wantRestarts))
			case now.IP != v.IP:
				errs = append(errs, fmt.Errorf("%s: IP %s, was %s", p.Name, now.IP, v.IP))
			}
		}
	}
	return errors.Join(errs...)
}

func reachPods(ctx context.Context, from *Node, pods []podView) error {
	var errs []error
	for _, v := range pods {
		if err := harness.Eventually(10*time.Second, func() error { return harness.HTTP(ctx, from.NSPath, v.IP) }); err != nil {
			errs = append(errs, fmt.Errorf("%s → %s (%s): %w", from.Name, v.Name, v.IP, err))
		}
	}
	return errors.Join(errs...)
}

var macRE = regexp.MustCompile(`link/ether ([0-9a-f:]{17})`)

func linkMAC(n *Node, dev string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, "ip", "-o", "link", "show", dev)
	if err != nil {
		return ""
	}
	if m := macRE.FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return ""
}

func equalIDs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = append([]string{}, a...), append([]string{}, b...)
	sort.Strings(a)
	sort.Strings(b)
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func condErr(ok bool, msg string) error {
	if ok {
		return nil
	}
	return errors.New(msg)
}

// kubeletDecisions greps the kubelet log for what it decided about the
// given pods (computePodActions at -v=3, kills, sandbox creations).
func kubeletDecisions(n *Node, pods []podView) string {
	data, _ := os.ReadFile(n.Node.Node.LogDir + "/kubelet.log")
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		for _, v := range pods {
			if !strings.Contains(line, v.Name) && !strings.Contains(line, v.UID) {
				continue
			}
			if strings.Contains(line, "computePodActions") || strings.Contains(line, "Killing") || strings.Contains(line, "sandbox") ||
				strings.Contains(line, "Sandbox") || strings.Contains(line, "StopPodSandbox") || strings.Contains(line, "RemoveContainer") {
				out = append(out, line)
			}
			break
		}
	}
	if len(out) > 200 {
		out = out[len(out)-200:]
	}
	return strings.Join(out, "\n")
}

// criCallRE matches containerd's CRI plugin log lines for the calls that
// create, stop or remove sandboxes and containers.
var criCallRE = regexp.MustCompile(`msg="(RunPodSandbox|StopPodSandbox|RemovePodSandbox|CreateContainer|StartContainer|StopContainer|RemoveContainer)`)

// criCalls returns containerd's log lines of sandbox and container
// lifecycle calls that concern the given pods (by name or uid), or any
// sandbox/container id those lines mention.
func criCalls(n *Node, pods []podView) string {
	data, _ := os.ReadFile(n.LogDir + "/containerd.log")
	var out []string
	ids := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		if !criCallRE.MatchString(line) && !strings.HasPrefix(line, "===") {
			continue
		}
		if strings.HasPrefix(line, "===") {
			out = append(out, line) // containerd (re)start: one per boot
			continue
		}
		match := false
		for _, v := range pods {
			if strings.Contains(line, v.UID) || strings.Contains(line, v.Name) {
				match = true
			}
		}
		for id := range ids {
			if strings.Contains(line, id) {
				match = true
			}
		}
		if match {
			for _, f := range regexp.MustCompile(`[0-9a-f]{64}`).FindAllString(line, -1) {
				ids[f] = true
			}
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// daemonsAlive checks that each daemon (name → a substring of its command
// line) still runs in the node.
func daemonsAlive(n *Node, want map[string]string) error {
	var cmdlines []string
	for _, pid := range n.Processes() {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
			cmdlines = append(cmdlines, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	var errs []error
	for name, sub := range want {
		alive := false
		for _, c := range cmdlines {
			if strings.Contains(c, sub) {
				alive = true
				break
			}
		}
		if !alive {
			errs = append(errs, fmt.Errorf("%s (%q) not running; log tail:\n%s", name, sub, harness.Tail(n.Logs(name), 1500)))
		}
	}
	return errors.Join(errs...)
}
