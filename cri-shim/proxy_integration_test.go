package crishim_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/test/harness"
)

func rawConn(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	c, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func rawCall(ctx context.Context, c *grpc.ClientConn, method string, req []byte) ([]byte, error) {
	var out rawMsg
	err := c.Invoke(ctx, method, &rawMsg{b: req}, &out, grpc.ForceCodec(rawTestCodec{}))
	return out.b, err
}

// TestProxyRelaysEverything: through the shim, known, unknown and streaming
// methods behave exactly as straight to containerd; malformed requests get
// InvalidArgument and record nothing; containerd errors pass unchanged; a
// containerd restart gives Unavailable, then service resumes.
func TestProxyRelaysEverything(t *testing.T) {
	site := harness.NewSite(t, 1, harness.WithContainerd())
	node := site.Node(1)
	if err := node.WriteCNIConfig("10-bridge", node.BridgeConflist(nil)); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	shim := startShim(t, node, state, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	direct := node.CRI()
	via := node.CRI(shim.Sock)
	rawVia, rawDirect := rawConn(t, shim.Sock), rawConn(t, node.ContainerdSock)

	// Known, relayed.
	vd, err := direct.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vv, err := via.Version(ctx)
	if err != nil {
		t.Fatalf("Version through shim: %v", err)
	}
	if !proto.Equal(vd, vv) {
		t.Fatalf("Version differs: direct %v, shim %v", vd, vv)
	}

	// Methods our cri-api does not know: runtime.v1alpha2 (dropped from
	// cri-api long ago, still served by containerd 1.6, gone from 2.x) and
	// containerd's own version service (served by both): containerd's
	// answer comes back unchanged, bytes or status.
	req, _ := proto.Marshal(&runtimeapi.VersionRequest{Version: "0.1.0"})
	for _, m := range []string{"/runtime.v1alpha2.RuntimeService/Version", "/containerd.services.version.v1.Version/Version"} {
		bd, errD := rawCall(ctx, rawDirect, m, req)
		bv, errV := rawCall(ctx, rawVia, m, req)
		if string(bd) != string(bv) || status.Code(errD) != status.Code(errV) || status.Convert(errD).Message() != status.Convert(errV).Message() {
			t.Fatalf("unknown method %s: direct %q %v, shim %q %v", m, bd, errD, bv, errV)
		}
		if m == "/containerd.services.version.v1.Version/Version" && (errD != nil || len(bd) == 0) {
			t.Fatalf("containerd's version service: %q %v", bd, errD)
		}
	}
	// An invented method: containerd's answer (Unimplemented) reaches us unchanged.
	_, errD := rawCall(ctx, rawDirect, "/runtime.v1.RuntimeService/NoSuchMethodV99", nil)
	_, errV := rawCall(ctx, rawVia, "/runtime.v1.RuntimeService/NoSuchMethodV99", nil)
	if status.Code(errV) != codes.Unimplemented || status.Convert(errD).Message() != status.Convert(errV).Message() {
		t.Fatalf("invented method: direct %v, shim %v", errD, errV)
	}

	// A server-streaming method of another containerd service, relayed live:
	// subscribe through the shim, then run a pod; its events arrive.
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	stream, err := rawVia.NewStream(sctx, &grpc.StreamDesc{ServerStreams: true}, "/containerd.services.events.v1.Events/Subscribe", grpc.ForceCodec(rawTestCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(&rawMsg{}); err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	events := make(chan string, 100)
	go func() {
		for {
			var m rawMsg
			if err := stream.RecvMsg(&m); err != nil {
				close(events)
				return
			}
			events <- string(m.b)
		}
	}()
	pod, err := via.RunPod(ctx, harness.PodSpec{Name: "relay"})
	if err != nil {
		t.Fatalf("RunPod through shim: %v\n%s", err, node.Logs("containerd"))
	}
	select {
	case ev, ok := <-events:
		if !ok || !strings.Contains(ev, "k8s.io") {
			t.Fatalf("event stream through shim: %q (open %v)", ev, ok)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no containerd event through the shim's stream relay")
	}
	scancel()
	// GetContainerEvents (streaming CRI: containerd 1.6 answers
	// Unimplemented, 2.x streams): subscribe both ways, make events (a
	// second pod), and both get the same: an event, or the same status.
	ectx, ecancel := context.WithTimeout(ctx, time.Minute)
	defer ecancel()
	sub := func(c *harness.CRI) <-chan error {
		ch := make(chan error, 1)
		s, err := c.GetContainerEvents(ectx, &runtimeapi.GetEventsRequest{})
		if err != nil {
			ch <- err
			return ch
		}
		go func() { _, err := s.Recv(); ch <- err }()
		return ch
	}
	evD, evV := sub(direct), sub(via)
	if _, err := direct.RunPod(ectx, harness.PodSpec{Name: "events"}); err != nil {
		t.Fatalf("RunPod for events: %v", err)
	}
	if eD, eV := <-evD, <-evV; status.Code(eD) != status.Code(eV) {
		t.Fatalf("GetContainerEvents: direct %v, shim %v", eD, eV)
	}
	// ExecSync relayed, real output.
	out, err := via.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: pod.ContainerIDs["app"], Cmd: []string{"echo", "through-the-shim"}, Timeout: 10})
	if err != nil || strings.TrimSpace(string(out.Stdout)) != "through-the-shim" {
		t.Fatalf("ExecSync through shim: %v %q", err, out.GetStdout())
	}

	// Recorded.
	rec, ok := shim.Store().Get(pod.Spec.UID)
	if !ok || len(rec.Sandboxes) != 1 || rec.Containers["app"] == nil || rec.Containers["app"].State != "running" {
		t.Fatalf("pod not recorded as running: %+v", rec)
	}

	// Garbage and truncated requests: InvalidArgument, nothing recorded.
	before := len(shim.Store().List())
	good, _ := proto.Marshal(&runtimeapi.RunPodSandboxRequest{Config: direct.SandboxConfig(harness.PodSpec{Name: "garbage"})})
	for name, b := range map[string][]byte{
		"garbage":   {0xff, 0xff, 0xff, 0xff, 0x0f},
		"truncated": good[:len(good)/2],
	} {
		for _, m := range []string{"/runtime.v1.RuntimeService/RunPodSandbox", "/runtime.v1.RuntimeService/CreateContainer", "/runtime.v1.RuntimeService/ListContainers"} {
			_, err := rawCall(ctx, rawVia, m, b)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("%s request to %s: got %v, want InvalidArgument", name, m, err)
			}
		}
	}
	if after := len(shim.Store().List()); after != before {
		t.Fatalf("malformed requests changed the records: %d → %d", before, after)
	}
	// A well-formed RunPodSandbox without a pod UID: InvalidArgument too.
	if _, err := via.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("RunPodSandbox without metadata: %v", err)
	}

	// containerd's errors reach the caller unchanged.
	_, eD := direct.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: "does-not-exist"})
	_, eV := via.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: "does-not-exist"})
	if eD == nil || status.Code(eD) != status.Code(eV) || status.Convert(eD).Message() != status.Convert(eV).Message() {
		t.Fatalf("StartContainer error: direct %v, shim %v", eD, eV)
	}
	_, eD = direct.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "nope"})
	_, eV = via.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "nope"})
	if eD == nil || status.Code(eD) != status.Code(eV) || status.Convert(eD).Message() != status.Convert(eV).Message() {
		t.Fatalf("PodSandboxStatus error: direct %v, shim %v", eD, eV)
	}

	// containerd goes away: Unavailable; it comes back: the shim reconnects.
	node.Kill("containerd")
	qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = via.Version(qctx)
	qcancel()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Version with containerd down: %v, want Unavailable", err)
	}
	if err := node.StartContainerd(); err != nil {
		t.Fatal(err)
	}
	if err := harness.Eventually(30*time.Second, func() error { _, err := via.Version(ctx); return err }); err != nil {
		t.Fatalf("shim did not reconnect to containerd: %v", err)
	}
	if _, ok := shim.Store().Get(pod.Spec.UID); !ok {
		t.Fatal("record lost over the containerd restart")
	}

	// Removing the last sandbox drops the record.
	if err := via.RemovePod(ctx, pod.SandboxID); err != nil {
		t.Fatal(err)
	}
	if _, ok := shim.Store().Get(pod.Spec.UID); ok {
		t.Fatal("record kept after kubelet removed the pod's only sandbox")
	}
	shim.Stop(t)
}
