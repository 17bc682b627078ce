// Package proxy is the CRI shim's gRPC front: one server on a unix socket
// that answers for runtime.v1.RuntimeService and runtime.v1.ImageService by
// relaying every call, byte for byte, to the runtime behind it (containerd),
// except the unary methods a caller registered with Handle, which are
// decoded, given to the caller's handler, and encoded back.
//
// Relaying uses grpc.UnknownServiceHandler with a raw-bytes codec, so
// streaming methods and methods newer than the cri-api version this binary
// was built with pass through unchanged, with their metadata, headers and
// trailers. Requests of methods this binary knows are checked to be valid
// protobuf before anything is done with them: garbage or truncated requests
// get InvalidArgument. Errors from the runtime reach the caller unchanged.
// The connection to the runtime reconnects with backoff by itself; while it
// is down, calls fail with Unavailable.
//
// The package owns the listening socket and the client connection; it
// records nothing and decides nothing about pods.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	_ "k8s.io/cri-api/pkg/apis/runtime/v1" // registers runtime.v1 descriptors
)

// MaxMsgSize bounds one message in either direction (kubelet uses 16 MiB).
const MaxMsgSize = 16 << 20

// frame is a message kept as the bytes that came off the wire.
type frame struct{ data []byte }

// rawCodec passes frames through untouched and marshals proto messages for
// the registered handlers.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *frame:
		return m.data, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("proxy codec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *frame:
		m.data = append([]byte(nil), data...)
		return nil
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("proxy codec: cannot unmarshal into %T", v)
}

var _ encoding.Codec = rawCodec{}

// Handler serves one intercepted unary method. req is already decoded and
// valid; the returned message is encoded back to the caller. A returned
// error that carries a gRPC status reaches the caller unchanged.
type Handler func(ctx context.Context, req proto.Message) (proto.Message, error)

type route struct {
	newReq func() proto.Message
	h      Handler
}

// Observer is told about every call (for metrics); may be nil.
type Observer func(method string, intercepted bool, code codes.Code, d time.Duration)

// Server is the proxy.
type Server struct {
	conn    *grpc.ClientConn
	routes  map[string]route
	observe Observer
	grpc    *grpc.Server
}

// Dial connects (lazily, reconnecting with backoff) to the runtime endpoint,
// given as unix:///path or a bare path.
func Dial(endpoint string) (*grpc.ClientConn, error) {
	target, err := unixTarget(endpoint)
	if err != nil {
		return nil, err
	}
	bc := backoff.DefaultConfig
	bc.BaseDelay = 100 * time.Millisecond
	bc.MaxDelay = 5 * time.Second
	return grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: 2 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize), grpc.MaxCallSendMsgSize(MaxMsgSize)),
	)
}

func unixTarget(endpoint string) (string, error) {
	switch {
	case strings.HasPrefix(endpoint, "unix://"):
		return endpoint, nil
	case strings.HasPrefix(endpoint, "/"):
		return "unix://" + endpoint, nil
	}
	return "", fmt.Errorf("runtime endpoint %q: want unix:///path/to/socket", endpoint)
}

// New returns a proxy relaying to conn.
func New(conn *grpc.ClientConn, observe Observer) *Server {
	s := &Server{conn: conn, routes: map[string]route{}, observe: observe}
	s.grpc = grpc.NewServer(
		grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(s.serve),
		grpc.MaxRecvMsgSize(MaxMsgSize),
		grpc.MaxSendMsgSize(MaxMsgSize),
	)
	return s
}

// Conn returns the connection to the runtime.
func (s *Server) Conn() *grpc.ClientConn { return s.conn }

// Handle intercepts a unary method ("/runtime.v1.RuntimeService/RunPodSandbox").
// Must be called before Serve.
func (s *Server) Handle(method string, newReq func() proto.Message, h Handler) {
	s.routes[method] = route{newReq: newReq, h: h}
}

// HandleUnary is Handle with types.
func HandleUnary[Req, Resp proto.Message](s *Server, method string, h func(ctx context.Context, req Req) (Resp, error)) {
	var zero Req
	mt := zero.ProtoReflect().Type()
	s.Handle(method, func() proto.Message { return mt.New().Interface() }, func(ctx context.Context, req proto.Message) (proto.Message, error) {
		resp, err := h(ctx, req.(Req))
		if err != nil {
			return nil, err
		}
		return resp, nil
	})
}

// Listen creates the unix socket at path (mode 0660), replacing a stale one.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

// Serve serves on ln until Stop.
func (s *Server) Serve(ln net.Listener) error {
	err := s.grpc.Serve(ln)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop stops serving, letting running calls finish for up to the grace time.
func (s *Server) Stop(grace time.Duration) {
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.grpc.Stop()
	}
}

var streamDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// serve handles every call.
func (s *Server) serve(_ any, ss grpc.ServerStream) error {
	start := time.Now()
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "proxy: no method in stream")
	}
	r, intercepted := s.routes[method]
	var err error
	if intercepted {
		err = s.serveUnary(ss, r)
	} else {
		err = s.relay(ss, method)
	}
	if s.observe != nil {
		s.observe(method, intercepted, status.Code(err), time.Since(start))
	}
	return err
}

func (s *Server) serveUnary(ss grpc.ServerStream, r route) error {
	var in frame
	if err := ss.RecvMsg(&in); err != nil {
		return err
	}
	req := r.newReq()
	if err := (proto.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(in.data, req); err != nil {
		return status.Errorf(codes.InvalidArgument, "malformed %s: %v", req.ProtoReflect().Descriptor().FullName(), err)
	}
	ctx := ss.Context()
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	resp, err := r.h(ctx, req)
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		return status.Error(codes.Unknown, err.Error())
	}
	return ss.SendMsg(resp)
}

// methodInfo is what the relay knows of a method: its request type when this
// binary knows it (nil otherwise) and whether it is plain unary.
type methodInfo struct {
	req   protoreflect.MessageType
	unary bool
}

var methodCache sync.Map // method name → methodInfo; derived from the immutable proto registry

func lookupMethod(method string) methodInfo {
	if v, ok := methodCache.Load(method); ok {
		return v.(methodInfo)
	}
	mi := methodInfo{}
	if mt, md := requestType(method); mt != nil {
		mi = methodInfo{req: mt, unary: !md.IsStreamingClient() && !md.IsStreamingServer()}
	}
	methodCache.Store(method, mi)
	return mi
}

// requestType returns the input type of a method known to this binary.
func requestType(method string) (protoreflect.MessageType, protoreflect.MethodDescriptor) {
	parts := strings.Split(strings.TrimPrefix(method, "/"), "/")
	if len(parts) != 2 {
		return nil, nil
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(parts[0]))
	if err != nil {
		return nil, nil
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, nil
	}
	md := sd.Methods().ByName(protoreflect.Name(parts[1]))
	if md == nil || md.IsStreamingClient() {
		return nil, nil
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	if err != nil {
		return nil, nil
	}
	return mt, md
}

// checkRequest refuses a request of a known method that is not valid
// protobuf of its type (garbage, truncated) with InvalidArgument.
func checkRequest(mi methodInfo, data []byte) error {
	if mi.req == nil {
		return nil
	}
	if err := proto.Unmarshal(data, mi.req.New().Interface()); err != nil {
		return status.Errorf(codes.InvalidArgument, "malformed %s: %v", mi.req.Descriptor().FullName(), err)
	}
	return nil
}

// relay passes one call of any shape through to the runtime.
func (s *Server) relay(ss grpc.ServerStream, method string) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		ctx = metadata.NewOutgoingContext(ctx, md)
	}

	// Read the first request before opening the upstream stream so that a
	// malformed request of a known method is refused here.
	var first frame
	firstErr := ss.RecvMsg(&first)
	if firstErr != nil && firstErr != io.EOF {
		return firstErr
	}
	mi := lookupMethod(method)
	if firstErr == nil {
		if err := checkRequest(mi, first.data); err != nil {
			return err
		}
	}
	if mi.unary && firstErr == nil {
		// Known unary method: one Invoke, no stream plumbing.
		var out frame
		var header, trailer metadata.MD
		err := s.conn.Invoke(ctx, method, &first, &out, grpc.ForceCodec(rawCodec{}), grpc.Header(&header), grpc.Trailer(&trailer))
		if len(header) > 0 {
			ss.SetHeader(header)
		}
		ss.SetTrailer(trailer)
		if err != nil {
			return err
		}
		return ss.SendMsg(&out)
	}

	cs, err := s.conn.NewStream(ctx, streamDesc, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	// caller → runtime
	upErr := make(chan error, 1)
	go func() {
		if firstErr == io.EOF {
			upErr <- cs.CloseSend()
			return
		}
		if err := cs.SendMsg(&first); err != nil {
			upErr <- nil // the receive side reports the stream's status
			return
		}
		for {
			var f frame
			if err := ss.RecvMsg(&f); err != nil {
				cs.CloseSend()
				if err == io.EOF {
					upErr <- nil
				} else {
					upErr <- err
				}
				return
			}
			if err := cs.SendMsg(&f); err != nil {
				upErr <- nil
				return
			}
		}
	}()
	// runtime → caller
	headerSent := false
	for {
		var f frame
		err := cs.RecvMsg(&f)
		if !headerSent {
			if h, herr := cs.Header(); herr == nil && len(h) > 0 {
				ss.SetHeader(h)
			}
			headerSent = true
		}
		if err != nil {
			ss.SetTrailer(cs.Trailer())
			if err == io.EOF {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(&f); err != nil {
			cancel()
			return err
		}
		select {
		case e := <-upErr:
			if e != nil {
				cancel()
				return e
			}
			upErr = nil
		default:
		}
	}
}
