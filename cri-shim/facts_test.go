package crishim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/cri-shim/record"
)

// TestFactsFetchedAndPersisted: client-go against an HTTP endpoint serving
// Pod objects the way the apiserver does; facts land in the record; a pod
// whose UID differs (recreated under the same name) is left alone; an
// unreachable apiserver is an error and changes nothing.
func TestFactsFetchedAndPersisted(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	yes := true
	pods := map[string]*corev1.Pod{
		"web": {ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", UID: types.UID("uid-web"),
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-abc", Controller: &yes}}},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
				InitContainers: []corev1.Container{{Name: "setup"}, {Name: "proxy", RestartPolicy: &always}}}},
		"old": {ObjectMeta: metav1.ObjectMeta{Name: "old", Namespace: "ns", UID: types.UID("uid-other")}},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := filepath.Base(r.URL.Path)
		p, ok := pods[name]
		if !ok || r.URL.Path != "/api/v1/namespaces/ns/pods/"+name {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
			return
		}
		p.Kind, p.APIVersion = "Pod", "v1"
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(p)
	}))
	defer srv.Close()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kc, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`, srv.URL)), 0o600)

	store, _, err := record.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"web", "old", "gone"} {
		raw, _ := record.MarshalProto(&runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: n, Namespace: "ns", Uid: "uid-" + n}}})
		store.Update("uid-"+n, true, func(p *record.Pod) (bool, error) {
			p.Name, p.Namespace, p.Sandbox = n, "ns", raw
			p.Sandboxes = []record.Sandbox{{ID: "sb-" + n}}
			return true, nil
		})
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f, err := newFactsFetcher(kc, store, log)
	if err != nil {
		t.Fatal(err)
	}
	n, err := f.once(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("fetched %d, err %v", n, err)
	}
	web, _ := store.Get("uid-web")
	if web.Facts == nil || web.Facts.RestartPolicy != "Never" || len(web.Facts.InitContainers) != 1 || web.Facts.InitContainers[0] != "setup" || web.Facts.OwnerKind != "ReplicaSet" {
		t.Fatalf("facts %+v", web.Facts)
	}
	if old, _ := store.Get("uid-old"); old.Facts != nil {
		t.Fatal("facts of a different pod UID stored")
	}
	// Persisted: a fresh store (offline boot) has them.
	again, _, _ := record.Open(store.Dir())
	if p, _ := again.Get("uid-web"); p.Facts == nil || p.Facts.Source != "apiserver" {
		t.Fatal("facts not persisted")
	}
	if n, err := f.once(context.Background()); err != nil || n != 0 {
		t.Fatalf("second pass fetched %d (err %v): a pod with facts was asked again", n, err)
	}
	srv.Close()
	if _, err := f.once(context.Background()); err == nil {
		t.Fatal("unreachable apiserver gave no error")
	}
	if p, _ := store.Get("uid-web"); p.Facts.RestartPolicy != "Never" {
		t.Fatal("offline fetch changed the persisted facts")
	}
}
