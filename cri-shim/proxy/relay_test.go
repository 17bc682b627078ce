package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// These tests put the relay between a real grpc-go client and a real
// grpc-go server (a stand-in runtime that answers every method by echoing);
// the integration tests in cri-shim do the same with containerd.

type rawMsg struct{ b []byte }

type testCodec struct{}

func (testCodec) Name() string                  { return "proto" }
func (testCodec) Marshal(v any) ([]byte, error) { return v.(*rawMsg).b, nil }
func (testCodec) Unmarshal(b []byte, v any) error {
	v.(*rawMsg).b = append([]byte(nil), b...)
	return nil
}

// backend is the stand-in runtime. For method /test.Echo/Fail it answers
// with an error carrying details; for every other method it echoes each
// message it receives with the method name prepended, sends header "h" and
// trailer "t" derived from the caller's metadata "m".
type backend struct {
	sock  string
	srv   *grpc.Server
	calls sync.Map // method → *atomic.Int64: request messages received
}

func startBackend(t *testing.T, dir string) *backend {
	t.Helper()
	b := &backend{sock: filepath.Join(dir, "rt.sock")}
	b.srv = grpc.NewServer(grpc.ForceServerCodec(testCodec{}), grpc.UnknownServiceHandler(b.serve))
	ln, err := net.Listen("unix", b.sock)
	if err != nil {
		t.Fatal(err)
	}
	go b.srv.Serve(ln)
	t.Cleanup(b.srv.Stop)
	return b
}

func (b *backend) count(m string) int64 {
	v, _ := b.calls.LoadOrStore(m, new(atomic.Int64))
	return v.(*atomic.Int64).Load()
}

func (b *backend) serve(_ any, ss grpc.ServerStream) error {
	m, _ := grpc.MethodFromServerStream(ss)
	v, _ := b.calls.LoadOrStore(m, new(atomic.Int64))
	md, _ := metadata.FromIncomingContext(ss.Context())
	ss.SetHeader(metadata.Pairs("h", "hdr-"+strings.Join(md.Get("m"), ",")))
	ss.SetTrailer(metadata.Pairs("t", "trl-"+strings.Join(md.Get("m"), ","), "t-bin", "\x00\x01binary"))
	if strings.HasSuffix(m, "/Fail") {
		st, _ := status.New(codes.FailedPrecondition, "it failed: 100% \n sure").WithDetails(durationpb.New(time.Second))
		return st.Err()
	}
	for {
		var in rawMsg
		if err := ss.RecvMsg(&in); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		v.(*atomic.Int64).Add(1) // a request message served
		if err := ss.SendMsg(&rawMsg{b: append([]byte(m+":"), in.b...)}); err != nil {
			return err
		}
	}
}

type relay struct {
	s    *Server
	sock string
	obs  chan string
}

func startRelay(t *testing.T, dir, rtSock string, register func(*Server)) *relay {
	t.Helper()
	r := &relay{sock: filepath.Join(dir, "relay.sock"), obs: make(chan string, 1000)}
	s, err := New("unix://"+rtSock, func(method string, intercepted bool, code codes.Code, _ time.Duration) {
		select {
		case r.obs <- fmt.Sprintf("%s %v %v", method, intercepted, code):
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	if register != nil {
		register(s)
	}
	ln, err := Listen(r.sock)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Stop(time.Second); s.Conn().Close() })
	return r
}

func client(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	c, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize), grpc.MaxCallSendMsgSize(MaxMsgSize)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type result struct {
	out            []byte
	header, trailr metadata.MD
	err            error
}

func call(ctx context.Context, c *grpc.ClientConn, method string, in []byte, m string) result {
	var r result
	var out rawMsg
	ctx = metadata.AppendToOutgoingContext(ctx, "m", m)
	r.err = c.Invoke(ctx, method, &rawMsg{b: in}, &out, grpc.ForceCodec(testCodec{}), grpc.Header(&r.header), grpc.Trailer(&r.trailr))
	r.out = out.b
	return r
}

func same(a, b result) error {
	if !bytes.Equal(a.out, b.out) {
		return fmt.Errorf("answer %d bytes vs %d bytes", len(a.out), len(b.out))
	}
	for _, k := range []string{"h", "t", "t-bin"} {
		if strings.Join(a.header.Get(k), ",")+strings.Join(a.trailr.Get(k), ",") != strings.Join(b.header.Get(k), ",")+strings.Join(b.trailr.Get(k), ",") {
			return fmt.Errorf("metadata %s: %v %v vs %v %v", k, a.header, a.trailr, b.header, b.trailr)
		}
	}
	sa, sb := status.Convert(a.err), status.Convert(b.err)
	if !proto.Equal(sa.Proto(), sb.Proto()) {
		return fmt.Errorf("status %v vs %v", sa.Proto(), sb.Proto())
	}
	return nil
}

// TestRelayMatchesDirect: unary calls of unknown and known methods, errors
// with details, metadata both ways, large messages (beyond every window)
// and many calls at once answer exactly as straight to the runtime.
func TestRelayMatchesDirect(t *testing.T) {
	dir := t.TempDir()
	be := startBackend(t, dir)
	r := startRelay(t, dir, be.sock, nil)
	direct, via := client(t, be.sock), client(t, r.sock)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	version, _ := proto.Marshal(&runtimeapi.VersionRequest{Version: "v"})
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<16) // 3 MiB, unknown method: unchecked
	cases := []struct {
		method string
		in     []byte
	}{
		{"/runtime.v1.RuntimeService/Version", version},
		{"/test.Echo/Echo", []byte("hello")},
		{"/test.Echo/Echo", nil},
		{"/test.Echo/Big", big},
		{"/test.Echo/Fail", []byte("x")},
	}
	for _, tc := range cases {
		a, b := call(ctx, direct, tc.method, tc.in, "v1"), call(ctx, via, tc.method, tc.in, "v1")
		if err := same(a, b); err != nil {
			t.Fatalf("%s: direct vs relay: %v", tc.method, err)
		}
		if tc.method == "/test.Echo/Fail" && status.Code(b.err) != codes.FailedPrecondition {
			t.Fatalf("Fail: %v", b.err)
		}
	}
	// Many at once, mixed sizes: stream IDs, windows and header
	// compression stay right.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := bytes.Repeat([]byte{byte(i)}, (i%8)*70000)
			m := fmt.Sprintf("/test.Echo/N%d", i%5)
			a, b := call(ctx, direct, m, in, fmt.Sprint(i)), call(ctx, via, m, in, fmt.Sprint(i))
			if err := same(a, b); err != nil || b.err != nil {
				errs <- fmt.Errorf("call %d: %v %v", i, err, b.err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestRelayStreams: a bidirectional stream of many messages relays in
// order, with its trailers.
func TestRelayStreams(t *testing.T) {
	dir := t.TempDir()
	be := startBackend(t, dir)
	r := startRelay(t, dir, be.sock, nil)
	via := client(t, r.sock)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := via.NewStream(metadata.AppendToOutgoingContext(ctx, "m", "s"), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/test.Echo/Stream", grpc.ForceCodec(testCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := 0; i < 200; i++ {
			cs.SendMsg(&rawMsg{b: bytes.Repeat([]byte{byte(i)}, i*500)})
		}
		cs.CloseSend()
	}()
	for i := 0; i < 200; i++ {
		var m rawMsg
		if err := cs.RecvMsg(&m); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if want := append([]byte("/test.Echo/Stream:"), bytes.Repeat([]byte{byte(i)}, i*500)...); !bytes.Equal(m.b, want) {
			t.Fatalf("message %d: %d bytes, want %d", i, len(m.b), len(want))
		}
	}
	if err := cs.RecvMsg(&rawMsg{}); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}
	if got := cs.Trailer().Get("t"); len(got) != 1 || got[0] != "trl-s" {
		t.Fatalf("trailer %v", cs.Trailer())
	}
}

// TestRelayInterceptsAndChecks: an intercepted method is answered by its
// handler (with the caller's metadata and deadline, large answers too, and
// its errors); a malformed request of a known method gets InvalidArgument
// and never reaches the runtime, a valid one does.
func TestRelayInterceptsAndChecks(t *testing.T) {
	dir := t.TempDir()
	be := startBackend(t, dir)
	type seen struct {
		md       metadata.MD
		deadline bool
	}
	got := make(chan seen, 10)
	r := startRelay(t, dir, be.sock, func(s *Server) {
		HandleUnary(s, "/runtime.v1.RuntimeService/RunPodSandbox", func(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
			md, _ := metadata.FromOutgoingContext(ctx)
			_, dl := ctx.Deadline()
			got <- seen{md, dl}
			switch req.GetRuntimeHandler() {
			case "fail":
				return nil, status.Error(codes.AlreadyExists, "sandbox exists")
			case "plain":
				return nil, fmt.Errorf("no status")
			case "big":
				return &runtimeapi.RunPodSandboxResponse{PodSandboxId: strings.Repeat("x", 1<<20)}, nil
			}
			return &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sb-" + req.GetConfig().GetMetadata().GetUid()}, nil
		})
	})
	via := runtimeapi.NewRuntimeServiceClient(client(t, r.sock))
	raw := client(t, r.sock)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mctx := metadata.AppendToOutgoingContext(ctx, "m", "kubelet", "x-bin", "\x00\xff")
	resp, err := via.RunPodSandbox(mctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Uid: "u1"}}})
	if err != nil || resp.PodSandboxId != "sb-u1" {
		t.Fatalf("intercepted: %v %v", resp, err)
	}
	s := <-got
	if !s.deadline || strings.Join(s.md.Get("m"), ",") != "kubelet" || strings.Join(s.md.Get("x-bin"), ",") != "\x00\xff" {
		t.Fatalf("handler saw metadata %v, deadline %v", s.md, s.deadline)
	}
	if _, err := via.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{RuntimeHandler: "fail"}); status.Code(err) != codes.AlreadyExists || status.Convert(err).Message() != "sandbox exists" {
		t.Fatalf("handler error: %v", err)
	}
	<-got
	if _, err := via.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{RuntimeHandler: "plain"}); status.Code(err) != codes.Unknown || status.Convert(err).Message() != "no status" {
		t.Fatalf("handler plain error: %v", err)
	}
	<-got
	if resp, err := via.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{RuntimeHandler: "big"}); err != nil || len(resp.GetPodSandboxId()) != 1<<20 {
		t.Fatalf("big intercepted answer: %d bytes, %v", len(resp.GetPodSandboxId()), err)
	}
	<-got
	if n := be.count("/runtime.v1.RuntimeService/RunPodSandbox"); n != 0 {
		t.Fatalf("runtime saw %d intercepted calls", n)
	}
	// Malformed requests: garbage, truncated, of an intercepted and of a
	// relayed known method. And one over a frame, truncated at its end.
	good, _ := proto.Marshal(&runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: strings.Repeat("i", 40000)}})
	for _, m := range []string{"/runtime.v1.RuntimeService/RunPodSandbox", "/runtime.v1.RuntimeService/ListContainers"} {
		for name, in := range map[string][]byte{"garbage": {0xff, 0xff, 0xff, 0xff, 0x0f}, "truncated": good[:len(good)-1]} {
			res := call(ctx, raw, m, in, "")
			if status.Code(res.err) != codes.InvalidArgument || !strings.Contains(status.Convert(res.err).Message(), "malformed") {
				t.Fatalf("%s %s: %v", name, m, res.err)
			}
		}
	}
	if n := be.count("/runtime.v1.RuntimeService/ListContainers"); n != 0 {
		t.Fatalf("runtime served %d malformed ListContainers", n)
	}
	if res := call(ctx, raw, "/runtime.v1.RuntimeService/ListContainers", good, ""); res.err != nil || !bytes.HasSuffix(res.out, good) {
		t.Fatalf("valid ListContainers: %v", res.err)
	}
	// The relay still works after all that on the same connection.
	if res := call(ctx, raw, "/test.Echo/After", []byte("ok"), ""); res.err != nil || string(res.out) != "/test.Echo/After:ok" {
		t.Fatalf("after: %q %v", res.out, res.err)
	}
}

// TestRelayRuntimeRestart: with the runtime gone calls fail with
// Unavailable; when it is back the relay serves again.
func TestRelayRuntimeRestart(t *testing.T) {
	dir := t.TempDir()
	be := startBackend(t, dir)
	r := startRelay(t, dir, be.sock, nil)
	via := client(t, r.sock)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if res := call(ctx, via, "/test.Echo/A", []byte("1"), ""); res.err != nil {
		t.Fatal(res.err)
	}
	be.srv.Stop()
	qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
	res := call(qctx, via, "/test.Echo/A", []byte("2"), "")
	qcancel()
	if status.Code(res.err) != codes.Unavailable {
		t.Fatalf("runtime down: %v, want Unavailable", res.err)
	}
	startBackend(t, dir)
	deadline := time.Now().Add(30 * time.Second)
	for {
		res := call(ctx, via, "/test.Echo/A", []byte("3"), "")
		if res.err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay did not serve again: %v", res.err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fuzzFrames builds a caller's byte stream from frames.
func fuzzFrames(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

func fuzzHeaders(stream uint32, end bool, fields ...string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	flags := uint8(flagEndHeaders)
	if end {
		flags |= flagEndStream
	}
	return appendFrame(nil, frameHeaders, flags, stream, b.Bytes())
}

func fuzzMessage(stream uint32, m proto.Message) []byte {
	b, _ := proto.Marshal(m)
	msg := append([]byte{0, 0, 0, 0, byte(len(b))}, b...)
	return appendFrame(nil, frameData, flagEndStream, stream, msg)
}

// FuzzRelay: whatever the caller and the runtime send, the relay neither
// panics nor hangs: it relays, answers, or closes the connection.
func FuzzRelay(f *testing.F) {
	req := func(stream uint32, method string) []byte {
		return fuzzHeaders(stream, false, ":method", "POST", ":scheme", "http", ":path", method, ":authority", "x", "content-type", "application/grpc", "grpc-timeout", "1S", "m-bin", "AAE")
	}
	settings := appendFrame(nil, frameSettings, 0, 0, appendSettings(nil, []setting{{settingInitialWindowSize, 10}, {settingHeaderTableSize, 100}}))
	kube := fuzzFrames(settings,
		req(1, "/runtime.v1.RuntimeService/RunPodSandbox"), fuzzMessage(1, &runtimeapi.RunPodSandboxRequest{RuntimeHandler: "big"}),
		req(3, "/runtime.v1.RuntimeService/Version"), fuzzMessage(3, &runtimeapi.VersionRequest{Version: "1"}),
		req(5, "/runtime.v1.RuntimeService/ListContainers"), appendFrame(nil, frameData, flagEndStream, 5, []byte{0, 0, 0, 0, 9, 0xff}),
		appendFrame(nil, framePing, 0, 0, make([]byte, 8)), appendFrame(nil, frameWindowUpdate, 0, 1, u32(100)),
		appendFrame(nil, frameRSTStream, 0, 3, u32(errCodeCancel)))
	rt := fuzzFrames(appendFrame(nil, frameSettings, 0, 0, nil),
		fuzzHeaders(1, false, ":status", "200", "content-type", "application/grpc"),
		appendFrame(nil, frameData, 0, 1, []byte{0, 0, 0, 0, 1, 'x'}),
		fuzzHeaders(1, true, "grpc-status", "0"),
		appendFrame(nil, frameGoAway, 0, 0, append(u32(1), u32(0)...)))
	f.Add(kube, rt)
	f.Add(kube[:len(kube)/2], rt[:len(rt)/3])
	f.Add([]byte{}, []byte{0, 0, 0, 9, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, kube, rt []byte) {
		s := &Server{routes: map[string]route{}, conns: map[*relayConn]struct{}{}}
		HandleUnary(s, "/runtime.v1.RuntimeService/RunPodSandbox", func(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
			if req.GetRuntimeHandler() == "big" {
				return &runtimeapi.RunPodSandboxResponse{PodSandboxId: strings.Repeat("y", 100000)}, nil
			}
			return nil, status.Error(codes.NotFound, "x")
		})
		down, kubeEnd := net.Pipe()
		up, rtEnd := net.Pipe()
		c := newRelayConn(s, down, up)
		done := make(chan struct{})
		go func() { c.run(); close(done) }()
		go io.Copy(io.Discard, kubeEnd)
		go io.Copy(io.Discard, rtEnd)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); kubeEnd.Write(append([]byte(preface), kube...)) }()
		go func() { defer wg.Done(); rtEnd.Write(rt) }()
		wrote := make(chan struct{})
		go func() { wg.Wait(); close(wrote) }()
		select {
		case <-wrote:
		case <-done:
		case <-time.After(200 * time.Millisecond): // a side waiting for window
		}
		kubeEnd.Close()
		rtEnd.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("relay did not end after both sides closed\n%s", buf[:runtime.Stack(buf, true)])
		}
	})
}
