package kubeclient

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// TestClientPathsAndDecoding: each resource is asked at its group's path
// (core under /api, the others under /apis/<group>), the reply decodes
// into the right type, and Reachable asks /version.
func TestClientPathsAndDecoding(t *testing.T) {
	replies := map[string]any{
		"/api/v1/nodes/n1":                                               &corev1.Node{TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: "n1"}},
		"/api/v1/namespaces/default/pods/p1":                             &corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: "p1", Namespace: "default"}},
		"/apis/coordination.k8s.io/v1/namespaces/hs/leases/l1":           &coordv1.Lease{TypeMeta: metav1.TypeMeta{Kind: "Lease", APIVersion: "coordination.k8s.io/v1"}, ObjectMeta: metav1.ObjectMeta{Name: "l1", Namespace: "hs"}},
		"/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/e1": &discoveryv1.EndpointSlice{TypeMeta: metav1.TypeMeta{Kind: "EndpointSlice", APIVersion: "discovery.k8s.io/v1"}, ObjectMeta: metav1.ObjectMeta{Name: "e1", Namespace: "default"}},
		"/version": map[string]string{"major": "1", "minor": "34"},
	}
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.URL.Path)
		v, ok := replies[r.URL.Path]
		if !ok {
			http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}))
	defer srv.Close()
	c, err := ForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if n, err := c.Nodes().Get(ctx, "n1", metav1.GetOptions{}); err != nil || n.Name != "n1" {
		t.Fatalf("node: %v %v", n, err)
	}
	if p, err := c.Pods("default").Get(ctx, "p1", metav1.GetOptions{}); err != nil || p.Name != "p1" {
		t.Fatalf("pod: %v %v", p, err)
	}
	if l, err := c.Leases("hs").Get(ctx, "l1", metav1.GetOptions{}); err != nil || l.Name != "l1" {
		t.Fatalf("lease: %v %v", l, err)
	}
	if e, err := c.EndpointSlices("default").Get(ctx, "e1", metav1.GetOptions{}); err != nil || e.Name != "e1" {
		t.Fatalf("endpointslice: %v %v", e, err)
	}
	if err := c.Reachable(ctx); err != nil {
		t.Fatalf("reachable: %v (asked %v)", err, asked)
	}
	if _, err := c.Services("default").Get(ctx, "missing", metav1.GetOptions{}); err == nil {
		t.Fatal("a missing Service was found")
	}
}
