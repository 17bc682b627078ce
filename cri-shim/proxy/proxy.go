// Package proxy is the CRI shim's front: it listens on a unix socket for
// kubelet's gRPC connections (runtime.v1.RuntimeService, ImageService) and
// relays every call to the runtime behind it (containerd), except the unary
// methods a caller registered with Handle, which are decoded, given to the
// caller's handler, and answered by the proxy itself.
//
// The relay works on HTTP/2 frames, not on gRPC calls: each caller
// connection gets a connection of its own to the runtime, and two pumps
// pass frames along, one per direction, rewriting only stream IDs, header
// compression and flow-control credit (relay.go says how). So a relayed
// call costs about what a byte pump costs, and streaming methods, methods
// newer than the cri-api version this binary was built with, and other
// services pass through unchanged, with their metadata, headers, trailers,
// status codes and messages. A request of a unary method this binary knows
// is checked to be valid protobuf before the runtime gets all of it:
// garbage or truncated requests get InvalidArgument and are never served.
// While the runtime is down, callers' connections are closed and their
// calls fail with Unavailable.
//
// The package owns the listening socket and the shim's own client
// connection to the runtime (Conn, which reconnects with backoff by
// itself); it records nothing and decides nothing about pods.
package proxy

import (
	"context"
	"errors"
	"fmt"
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
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	_ "k8s.io/cri-api/pkg/apis/runtime/v1" // registers runtime.v1 descriptors
)

// MaxMsgSize bounds one message in either direction (kubelet uses 16 MiB).
const MaxMsgSize = 16 << 20

// Flow-control windows of the shim's own client connection (Conn), fixed.
// A fixed window turns off grpc-go's BDP estimation, which would otherwise
// send a PING and a WINDOW_UPDATE after nearly every message received.
const (
	StreamWindow = 4 << 20
	ConnWindow   = 16 << 20
)

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
	path    string // the runtime's socket
	conn    *grpc.ClientConn
	routes  map[string]route
	observe Observer

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*relayConn]struct{}
	stopping bool
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
		grpc.WithStaticStreamWindowSize(StreamWindow),
		grpc.WithStaticConnWindowSize(ConnWindow),
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

// New returns a proxy relaying to the runtime at endpoint (unix:///path or
// a bare path). Its own client connection (Conn) is for the intercepted
// calls and anyone else in the shim who talks to the runtime.
func New(endpoint string, observe Observer) (*Server, error) {
	target, err := unixTarget(endpoint)
	if err != nil {
		return nil, err
	}
	conn, err := Dial(target)
	if err != nil {
		return nil, err
	}
	return &Server{path: strings.TrimPrefix(target, "unix://"), conn: conn, routes: map[string]route{}, observe: observe,
		conns: map[*relayConn]struct{}{}}, nil
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

// Serve serves on ln until Stop. Each caller connection gets its own
// connection to the runtime; a caller connecting while the runtime is down
// is disconnected at once (its calls fail with Unavailable) and reconnects
// by itself.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	for {
		down, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			stopping := s.stopping
			s.mu.Unlock()
			if stopping {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		go s.serveConn(down)
	}
}

// dialTimeout bounds connecting to the runtime for one caller connection.
const dialTimeout = 5 * time.Second

func (s *Server) serveConn(down net.Conn) {
	up, err := net.DialTimeout("unix", s.path, dialTimeout)
	if err != nil {
		down.Close()
		return
	}
	c := newRelayConn(s, down, up)
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		down.Close()
		up.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	c.run()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Stop stops serving: callers are sent GOAWAY, calls under way get up to
// the grace time to finish, then every connection is closed.
func (s *Server) Stop(grace time.Duration) {
	s.mu.Lock()
	s.stopping = true
	if s.ln != nil {
		s.ln.Close()
	}
	conns := make([]*relayConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.drain()
	}
	deadline := time.Now().Add(grace)
	for _, c := range conns {
		for !c.idle() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		c.close()
	}
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
