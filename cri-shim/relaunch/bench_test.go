package relaunch

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/cri-shim/record"
)

// BenchmarkSuperviseOnce is one pass of the restart supervisor (once a
// second in holdfastd) over 50 recorded pods of a node at rest: none of
// them relaunched in this boot, or all adopted by kubelet since, so the
// pass has nothing to do.
func BenchmarkSuperviseOnce(b *testing.B) {
	s, bad, err := record.Open(b.TempDir())
	if err != nil || len(bad) != 0 {
		b.Fatal(err, bad)
	}
	for i := range 50 {
		uid := fmt.Sprintf("uid-%02d", i)
		name := fmt.Sprintf("web-%02d", i)
		sb, err := record.MarshalProto(&runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
			Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: uid},
			Hostname:     name,
			LogDirectory: "/var/log/pods/default_" + name + "_" + uid,
			Labels:       map[string]string{"app": "web", "io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "default", "io.kubernetes.pod.uid": uid, "pod-template-hash": "5d8f7c9b4"},
			Annotations:  map[string]string{"kubernetes.io/config.seen": "2026-12-03T10:00:00Z", "kubernetes.io/config.source": "api"},
		}, RuntimeHandler: "runc"})
		if err != nil {
			b.Fatal(err)
		}
		ctr, err := record.MarshalProto(&runtimeapi.CreateContainerRequest{Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
			Image:    &runtimeapi.ImageSpec{Image: "registry.local/web:1.0"},
			Envs:     []*runtimeapi.KeyValue{{Key: "PORT", Value: "8080"}, {Key: "MODE", Value: "edge"}},
			Mounts:   []*runtimeapi.Mount{{ContainerPath: "/var/run/secrets/kubernetes.io/serviceaccount", HostPath: "/var/lib/kubelet/pods/" + uid + "/volumes/kubernetes.io~projected/kube-api-access", Readonly: true}},
			Labels:   map[string]string{"io.kubernetes.container.name": "app", "io.kubernetes.pod.uid": uid},
		}})
		if err != nil {
			b.Fatal(err)
		}
		err = s.Update(uid, true, func(p *record.Pod) (bool, error) {
			p.Name, p.Namespace, p.Sandbox, p.RuntimeHandler = name, "default", sb, "runc"
			p.Sandboxes = []record.Sandbox{{ID: "sb-" + uid, BootID: "old", Created: time.Now()}}
			p.Containers["app"] = &record.Container{Name: "app", Request: ctr, ID: "c-" + uid, SandboxID: "sb-" + uid, CreateSeq: 1, StartSeq: 2, State: record.StateRunning}
			p.NextSeq = 3
			p.Facts = &record.Facts{Source: "apiserver", RestartPolicy: record.RestartAlways, OwnerKind: "ReplicaSet", OwnerName: "web-5d8f7c9b4"}
			if i%2 == 0 { // relaunched after an offline boot, adopted since
				p.Relaunch = &record.Relaunch{BootID: "now", Outcome: record.OutcomeRelaunched, SandboxID: "sb-" + uid, Containers: map[string]string{"app": "c-" + uid}, At: time.Now(), Adopted: true}
			}
			return true, nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	r := &Runner{Store: s, BootID: "now", Log: slog.New(slog.NewTextHandler(io.Discard, nil)), BackoffBase: time.Second, BackoffMax: time.Minute}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		r.SuperviseOnce(ctx)
	}
}
