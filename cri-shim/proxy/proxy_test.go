package proxy

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestLookupMethod(t *testing.T) {
	for m, want := range map[string]struct{ known, unary bool }{
		"/runtime.v1.RuntimeService/Version":            {true, true},
		"/runtime.v1.RuntimeService/GetContainerEvents": {true, false},
		"/runtime.v1.ImageService/PullImage":            {true, true},
		"/runtime.v1alpha2.RuntimeService/Version":      {false, false},
		"/runtime.v1.RuntimeService/NoSuchMethod":       {false, false},
		"garbage": {false, false},
	} {
		mi := lookupMethod(m)
		if (mi.req != nil) != want.known || mi.unary != want.unary {
			t.Errorf("%s: known=%v unary=%v, want %+v", m, mi.req != nil, mi.unary, want)
		}
	}
}

func TestCheckRequest(t *testing.T) {
	mi := lookupMethod("/runtime.v1.RuntimeService/RunPodSandbox")
	good, _ := proto.Marshal(&runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "a", Uid: "u", Namespace: "n"}, Hostname: "a"}})
	if err := checkRequest(mi, good); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(good); i++ {
		err := checkRequest(mi, good[:i])
		if err != nil && status.Code(err) != codes.InvalidArgument {
			t.Fatalf("truncated at %d: %v", i, err)
		}
	}
	if err := checkRequest(mi, good[:len(good)-1]); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("truncated request accepted: %v", err)
	}
	if err := checkRequest(lookupMethod("/x.Unknown/Method"), []byte{0xff}); err != nil {
		t.Fatalf("unknown methods are relayed unchecked: %v", err)
	}
}

// FuzzCheckRequest: any bytes for any intercepted or relayed method either
// pass or get InvalidArgument, never a panic or another code.
func FuzzCheckRequest(f *testing.F) {
	good, _ := proto.Marshal(&runtimeapi.CreateContainerRequest{PodSandboxId: "s", Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}}})
	f.Add(good, uint8(0))
	f.Add([]byte{0xff, 0xff}, uint8(1))
	methods := []string{"/runtime.v1.RuntimeService/CreateContainer", "/runtime.v1.RuntimeService/RunPodSandbox", "/runtime.v1.RuntimeService/ListContainers", "/runtime.v1.ImageService/PullImage"}
	f.Fuzz(func(t *testing.T, data []byte, m uint8) {
		err := checkRequest(lookupMethod(methods[int(m)%len(methods)]), data)
		if err != nil && status.Code(err) != codes.InvalidArgument {
			t.Fatalf("code %v", status.Code(err))
		}
	})
}

// TestTakeCredit: small grants are held back while the peer's window is
// ample, and all held credit is passed on once it runs low.
func TestTakeCredit(t *testing.T) {
	view, held := int64(initialWindow), int64(0)
	if w := takeCredit(&view, &held, 40); w != 0 || held != 40 {
		t.Fatalf("small grant passed on at once: %d (held %d)", w, held)
	}
	if w := takeCredit(&view, &held, -(initialWindow - creditLow + 1)); w != 40 || held != 0 || view != creditLow-1+40 {
		t.Fatalf("window low: passed on %d, held %d, view %d", w, held, view)
	}
	if w := takeCredit(&view, &held, creditBatch); w != creditBatch {
		t.Fatalf("a batch: passed on %d", w)
	}
	view, held = 0, 0
	for i := 0; i < 3; i++ {
		if w := takeCredit(&view, &held, 1); w != 1 {
			t.Fatalf("peer out of window: credit held (%d)", w)
		}
		view = 0
	}
}
