//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast-edge/holdfast/install/manifests"
	"github.com/holdfast-edge/holdfast/test/harness"
)

// TestE2E runs stock Kubernetes (kube-apiserver, kube-controller-manager,
// kube-scheduler, kubelet) on a three-node harness site with holdfast under
// kubelet, and checks the scenario of issue 10. Run it with `make e2e`
// (builds the binaries with test/tools/build.sh first).
func TestE2E(t *testing.T) {
	bins, err := FindBins()
	if err != nil {
		t.Fatal(err)
	}
	rep := NewReport(os.Stdout)
	t.Cleanup(func() {
		path := ReportPath()
		if err := rep.Write(path); err != nil {
			t.Errorf("write report: %v", err)
		} else {
			t.Logf("report: %s", path)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	s := bringUp(t, ctx, rep, bins)
	baseline(t, ctx, rep, s)
	if rep.OK() {
		scenario(t, ctx, rep, s)
	}
	if !rep.OK() {
		s.dumpLogs(t)
		t.Fatalf("e2e assertions failed (report at %s):%s", ReportPath(), rep.Failures())
	}
}

// bringUp starts the control plane in the cloud netns and, on every node,
// the overlay (harness), containerd, the holdfast CRI shim, the snapshot
// watcher and kubelet; it waits for every Node to be Ready.
func bringUp(t *testing.T, ctx context.Context, rep *Report, bins Bins) *site {
	fmt.Println("== bring-up: 3-node site, control plane in the cloud netns, kubelet through the holdfast CRI shim")
	hs := harness.NewSite(t, 3, harness.WithCloud())
	hs.Keep = os.Getenv("E2E_KEEP") != ""
	refPlugins := harness.CNIPlugins(t)
	hfBins := harness.Binaries(t)
	rep.Mark("site created", hs.ID)

	cloud, err := NewCloud(hs.Cloud, bins)
	if err != nil {
		t.Fatal(err)
	}
	if err := cloud.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rep.Mark("apiserver ready", cloud.Server)
	cs, err := cloud.Client()
	if err != nil {
		t.Fatal(err)
	}
	s := &site{Site: hs, cloud: cloud, cs: cs}

	ca, err := os.ReadFile(cloud.PKI.CACert)
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := ApplyManifests(ctx, cs, ca, WebhookURL())
	if err != nil {
		t.Fatalf("apply holdfastd manifests: %v", err)
	}
	if err := cloud.StartWebhook(ctx, cs, filepath.Join(hfBins, "holdfastd")); err != nil {
		t.Fatalf("start webhook: %v\n%s", err, cloud.Node.Logs("webhook"))
	}
	if err := cloud.StartCoreDNS(); err != nil {
		t.Fatal(err)
	}
	rep.Mark("holdfast cloud side", "manifests applied, webhook registered at "+WebhookURL())
	images, err := ClusterImages(bins, hfBins)
	if err != nil {
		t.Fatal(err)
	}
	for _, hn := range hs.Nodes {
		n, err := NewNode(hn, hfBins, cloud)
		if err != nil {
			t.Fatal(err)
		}
		out, err := n.BringUpInstalled(ctx, refPlugins)
		if err != nil {
			t.Fatalf("%s: %v", hn.Name, err)
		}
		t.Logf("%s: holdfastd install:\n%s", hn.Name, out)
		rep.Check(hn.Name+": holdfastd install wired the node (chained conflist first, kubelet → shim and holdfast DNS, units in boot order; a second install changes nothing)", n.CheckInstalled())
		if err := n.StartKubelet(); err != nil {
			t.Fatalf("%s: start kubelet: %v", hn.Name, err)
		}
		s.nodes = append(s.nodes, n)
	}
	rep.Mark("kubelets started", "")
	// The imports run while the kubelets register.
	imported := make(chan error, 1)
	go func() { imported <- ImportImages(ctx, s.nodes, images) }()
	for _, n := range s.nodes {
		if err := SetPodCIDR(ctx, cs, n.Name, n.PodCIDR().String(), 90*time.Second); err != nil {
			s.dumpLogs(t)
			t.Fatalf("%s: %v", n.Name, err)
		}
		if err := n.RouteServices(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rep.Mark("nodes registered", "podCIDRs set from the harness plan")
	if err := <-imported; err != nil {
		t.Fatal(err)
	}
	rep.Mark("images imported", fmt.Sprintf("%d images into every node's containerd", len(images)))
	// kube-proxy first: flanneld and holdfast's daemons reach the
	// apiserver through the kubernetes Service's ClusterIP (in-cluster
	// config), kube-proxy through kubeadm's kubeconfig.
	if err := createObjects(ctx, cs, kubeProxyObjects(hs, cloud.Server)); err != nil {
		t.Fatal(err)
	}
	if err := WaitDaemonPods(ctx, cs, s.nodeNames(), []string{"kube-proxy"}, 120*time.Second); err != nil {
		s.dumpLogs(t)
		t.Fatal(err)
	}
	if err := WaitAPIServiceIP(ctx, s.nodes, 60*time.Second); err != nil {
		s.dumpLogs(t)
		t.Fatal(err)
	}
	rep.Mark("kube-proxy running", "DaemonSets kube-proxy, kube-proxy-nftables; every node reaches the kubernetes Service")
	if err := createObjects(ctx, cs, flannelObjects(hs)); err != nil {
		t.Fatal(err)
	}
	hfDS, err := holdfastDaemonSets(hs, rendered)
	if err != nil {
		t.Fatal(err)
	}
	objs := []any{}
	for _, ds := range hfDS {
		objs = append(objs, ds)
	}
	if err := createObjects(ctx, cs, objs); err != nil {
		t.Fatal(err)
	}
	for _, n := range s.nodes {
		if err := n.WaitOverlay(ctx, s.nodes, 90*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	rep.Mark("flannel overlay up", "kube subnet manager, vxlan")
	ok := rep.Check("bring-up: every node Ready", WaitNodesReady(ctx, cs, s.nodeNames(), 120*time.Second))
	if !ok {
		s.dumpLogs(t)
		t.FailNow()
	}
	rep.Mark("nodes ready", strings.Join(s.nodeNames(), ","))
	ok = rep.Check("bring-up: kube-proxy, flanneld and the holdfast agent (health and DNS) run as DaemonSet pods on every node",
		WaitDaemonPods(ctx, cs, s.nodeNames(), []string{"kube-proxy", "kube-flannel-ds", manifests.Agent}, 120*time.Second))
	if !ok {
		s.dumpLogs(t)
		t.FailNow()
	}
	all := map[string]string{}
	for _, n := range s.nodes {
		all[n.Name] = "alive"
	}
	if !rep.Check("bring-up: every health daemon votes every node alive", WaitVerdicts(ctx, s.nodes, all, 60*time.Second)) {
		s.dumpLogs(t)
		t.FailNow()
	}
	rep.Mark("health verdicts", "3 members, all alive")
	return s
}

// baseline runs a Deployment behind a ClusterIP Service and a StatefulSet
// behind a headless Service over every node and checks that kubelet runs
// them through the shim, that every pod reaches every Service by IP and by
// name (holdfast DNS), and that holdfast DNS answers like CoreDNS.
func baseline(t *testing.T, ctx context.Context, rep *Report, s *site) {
	// Created first: it starts while the workloads do.
	rep.Check("baseline: volumes pod (Secret, ConfigMap, downwardAPI, memory emptyDir, token, env from both, subPath of both) created on node3", s.createVols(ctx))
	for _, w := range []struct {
		create   func() error
		app      string
		replicas int
	}{
		{func() error { return CreateDeployment(ctx, s.cs, Deployment(WebApp, 6)) }, WebApp, 6},
		{func() error { return CreateStatefulSet(ctx, s.cs, StatefulSet(DBApp, 3)) }, DBApp, 3},
	} {
		if err := w.create(); err != nil {
			t.Fatal(err)
		}
		pods, err := WaitPodsRunning(ctx, s.cs, "default", w.app, w.replicas, s.nodeNames(), 180*time.Second)
		if !rep.Check("baseline: "+w.app+" pods Running and Ready on every node", err) {
			t.Logf("events:\n%s", Events(ctx, s.cs, "default"))
			return
		}
		rep.Mark(w.app+" running", fmt.Sprintf("%d pods", len(pods)))
	}
	pods, err := s.workloadPods(ctx)
	if !rep.Check("baseline: list workload pods", err) {
		return
	}
	rep.Check("baseline: one ready sandbox per pod in the shim", s.oneSandboxEach(ctx, pods))
	rep.Check("baseline: pod IPs inside their node's pod CIDR", s.podIPsInCIDR(pods))
	rep.Check("baseline: every pod reachable (TCP) from every node", s.reachable(ctx, pods))

	web, err := s.cs.CoreV1().Services("default").Create(ctx, Service(WebApp), metav1.CreateOptions{})
	if err == nil {
		_, err = s.cs.CoreV1().Services("default").Create(ctx, HeadlessService(DBApp), metav1.CreateOptions{})
	}
	if !rep.Check("baseline: ClusterIP Service web and headless Service db created", err) {
		return
	}
	netns, err := s.podNetns(ctx, pods)
	if err == nil {
		err = reachService(ctx, web.Spec.ClusterIP, s.nodes, netns)
	}
	rep.Check("baseline: ClusterIP reachable from every node and every pod (kube-proxy)", err)
	rep.Mark("service reachable", web.Spec.ClusterIP)
	rep.Check("baseline: node3's kube-proxy in nftables mode maps web's ClusterIP, and node3's snapshot holds its table", s.nftablesBaseline(ctx, web.Spec.ClusterIP))

	db := podsOfApp(pods, DBApp)
	rep.Check("baseline: every pod reaches web, db and each db pod by DNS name (holdfast DNS)", s.reachByName(ctx, views(pods), serviceTargets(db)))
	rep.Mark("names resolve", "from every pod, through holdfast DNS")
	if rep.Check("baseline: reference CoreDNS (kubernetes plugin) answers", s.waitCoreDNS(ctx)) {
		qs := parityQuestions(web.Spec.ClusterIP, db)
		table, same, diffs := s.dnsParity(ctx, s.nodes[0], qs)
		fmt.Printf("DNS parity, holdfast vs CoreDNS on the same apiserver: %d of %d identical\n%s", same, len(qs), table)
		rep.Check(fmt.Sprintf("baseline: holdfast DNS answers like CoreDNS (%d of %d questions identical)", same, len(qs)), joinLines(diffs))
	}
}

func (s *site) oneSandboxEach(ctx context.Context, pods []corev1.Pod) error {
	var errs []error
	for _, p := range pods {
		n := s.node(p.Spec.NodeName)
		if n == nil {
			errs = append(errs, fmt.Errorf("pod %s on unknown node %q", p.Name, p.Spec.NodeName))
			continue
		}
		c, err := harness.DialCRI(n.ShimSock())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sbs, err := c.ReadySandboxes(ctx, string(p.UID))
		c.Close()
		if err != nil {
			errs = append(errs, err)
		} else if len(sbs) != 1 {
			errs = append(errs, fmt.Errorf("pod %s (uid %s) on %s: %d ready sandboxes", p.Name, p.UID, n.Name, len(sbs)))
		}
	}
	return errors.Join(errs...)
}

func (s *site) podIPsInCIDR(pods []corev1.Pod) error {
	var errs []error
	for _, p := range pods {
		n := s.node(p.Spec.NodeName)
		if n == nil || !n.PodCIDR().Contains(parseIP(p.Status.PodIP)) {
			errs = append(errs, fmt.Errorf("pod %s on %s has IP %q", p.Name, p.Spec.NodeName, p.Status.PodIP))
		}
	}
	return errors.Join(errs...)
}

func (s *site) reachable(ctx context.Context, pods []corev1.Pod) error {
	var errs []error
	for _, n := range s.nodes {
		for _, p := range pods {
			// Ready in the apiserver is not yet listening: poll.
			if err := harness.Eventually(30*time.Second, func() error { return harness.HTTP(ctx, n.NSPath, p.Status.PodIP) }); err != nil {
				errs = append(errs, fmt.Errorf("from %s to %s (%s): %w", n.Name, p.Name, p.Status.PodIP, err))
			}
		}
	}
	return errors.Join(errs...)
}

// dumpLogs prints the tails of the control plane's and the nodes' logs.
func (s *site) dumpLogs(t *testing.T) {
	for _, name := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		t.Logf("--- cloud %s (tail)\n%s", name, harness.Tail(s.cloud.Node.Logs(name), 3000))
	}
	for _, n := range s.nodes {
		for _, name := range []string{"kubelet", "cri-shim", "containerd", "snapshot-watch"} {
			t.Logf("--- %s %s (tail)\n%s", n.Name, name, harness.Tail(n.Logs(name), 4000))
		}
		for _, pod := range []string{KubeFlannelNS + "_kube-flannel-ds", "kube-system_kube-proxy", manifests.Namespace + "_" + manifests.Agent} {
			t.Logf("--- %s pod logs %s* (tail)\n%s", n.Name, pod, harness.Tail(n.podLogs(pod), 4000))
		}
	}
}
