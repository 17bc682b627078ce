package watch

import (
	"context"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/dns/store"
	"github.com/holdfast-edge/holdfast/internal/kubeclient/kubefake"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestInformersFeedStore: a snapshot object deleted while offline goes away
// at sync; adds, updates and deletes flow into the store afterwards.
func TestInformersFeedStore(t *testing.T) {
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	st.SetService(store.Service{Namespace: "default", Name: "gone-while-offline", ClusterIPs: []string{"10.96.9.9"}})
	ready := true
	cs := fake.NewSimpleClientset(
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"}}},
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}}},
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	online := make(chan bool, 10)
	go RunWithClient(ctx, kubefake.Wrap(cs), Options{Store: st, OnOnline: func(b bool) { online <- b }})
	select {
	case b := <-online:
		if !b {
			t.Fatal("reported offline")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("never synced")
	}
	v := st.View()
	if len(v.Services) != 1 || v.Services[0].Name != "web" || len(v.Slices) != 1 || v.Source != "apiserver" {
		t.Fatalf("after sync: %+v", v)
	}
	_, err = cs.CoreV1().Services("prod").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "api"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.5.5"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "added service", func() bool { return len(st.View().Services) == 2 })
	if err := cs.DiscoveryV1().EndpointSlices("default").Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "deleted slice", func() bool { return len(st.View().Slices) == 0 })
}

// The informers' cache keeps neither managed fields nor annotations, and
// keeps what the store reads (the slice's service-name label).
func TestSlimDropsWhatDNSNeverReads(t *testing.T) {
	sl := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-abc", Namespace: "default",
		Labels:        map[string]string{discoveryv1.LabelServiceName: "web"},
		Annotations:   map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager"}}}}
	o, err := slim(sl)
	if err != nil {
		t.Fatal(err)
	}
	got := o.(*discoveryv1.EndpointSlice)
	if got.Annotations != nil || got.ManagedFields != nil {
		t.Fatalf("kept annotations %v, managed fields %v", got.Annotations, got.ManagedFields)
	}
	if got.Labels[discoveryv1.LabelServiceName] != "web" {
		t.Fatalf("service-name label lost: %v", got.Labels)
	}
	tomb := cache.DeletedFinalStateUnknown{Key: "default/web"}
	if o, err := slim(tomb); err != nil || o != tomb {
		t.Fatalf("tombstone: %v, %v", o, err)
	}
}
