package proxy

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// startLocal serves a stream of an intercepted method once its request is
// complete: the handler runs on its own goroutine, so the pump goes on.
func (c *relayConn) startLocal(st *stream) {
	c.mu.Lock()
	if st.reset || c.closed || st.cancel != nil { // reset, or started already
		c.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	st.cancel = cancel
	c.locals++
	c.mu.Unlock()
	go func() {
		defer func() {
			cancel()
			c.mu.Lock()
			c.locals--
			c.cond.Broadcast()
			c.mu.Unlock()
		}()
		resp, err := serveLocal(ctx, st)
		c.answer(st, resp, err)
	}()
}

// refuse answers a stream with an error, here, without the runtime.
func (c *relayConn) refuse(st *stream, err error) {
	c.mu.Lock()
	if st.cancel != nil || st.reset {
		c.mu.Unlock()
		return
	}
	st.cancel = func() {}
	c.mu.Unlock()
	c.answer(st, nil, err)
}

// serveLocal decodes the one request message, runs the handler and encodes
// its answer.
func serveLocal(ctx context.Context, st *stream) ([]byte, error) {
	req := st.route.newReq()
	name := req.ProtoReflect().Descriptor().FullName()
	msg := st.msg
	if len(msg) < 5 || uint32(len(msg)-5) != binary.BigEndian.Uint32(msg[1:5]) {
		return nil, status.Errorf(codes.InvalidArgument, "malformed %s: want exactly one gRPC message", name)
	}
	if msg[0] != 0 {
		return nil, status.Errorf(codes.Unimplemented, "%s: the CRI shim does not take compressed requests", st.method)
	}
	if err := proto.Unmarshal(msg[5:], req); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "malformed %s: %v", name, err)
	}
	md, timeout, err := incoming(st.fields)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(md) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	resp, err := st.route.h(ctx, req)
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Error(codes.Unknown, err.Error())
	}
	b, err := proto.Marshal(resp)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode %s answer: %v", st.method, err)
	}
	return b, nil
}

// reservedHeaders are the request headers that are gRPC's own, not the
// caller's metadata.
var reservedHeaders = map[string]bool{
	"content-type": true, "user-agent": true, "te": true, "grpc-timeout": true, "grpc-encoding": true,
	"grpc-accept-encoding": true, "grpc-message": true, "grpc-status": true, "grpc-status-details-bin": true,
	"grpc-message-type": true,
}

// incoming is the caller's metadata and deadline from its request headers.
func incoming(fields []hpack.HeaderField) (metadata.MD, time.Duration, error) {
	md := metadata.MD{}
	var timeout time.Duration
	for _, f := range fields {
		switch {
		case strings.HasPrefix(f.Name, ":"):
		case f.Name == "grpc-timeout":
			d, err := parseTimeout(f.Value)
			if err != nil {
				return nil, 0, err
			}
			timeout = d
		case reservedHeaders[f.Name]:
		case strings.HasSuffix(f.Name, "-bin"):
			v, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(f.Value, "="))
			if err != nil {
				return nil, 0, fmt.Errorf("metadata %s: %v", f.Name, err)
			}
			md[f.Name] = append(md[f.Name], string(v))
		default:
			md[f.Name] = append(md[f.Name], f.Value)
		}
	}
	return md, timeout, nil
}

// parseTimeout parses a grpc-timeout value ("1999968u").
func parseTimeout(v string) (time.Duration, error) {
	if len(v) < 2 || len(v) > 9 {
		return 0, fmt.Errorf("grpc-timeout %q: malformed", v)
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("grpc-timeout %q: malformed", v)
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, fmt.Errorf("grpc-timeout %q: unknown unit", v)
	}
	return time.Duration(n) * unit, nil
}

// encodeGrpcMessage percent-encodes a grpc-message value.
func encodeGrpcMessage(m string) string {
	var b strings.Builder
	for i := 0; i < len(m); i++ {
		if c := m[i]; c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

var respHeaders = []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}}

// answer writes the relay's own answer to a stream: headers, the message
// and trailers, or trailers only for an error.
func (c *relayConn) answer(st *stream, resp []byte, err error) {
	code := codes.OK
	if err != nil {
		s := status.Convert(err)
		code = s.Code()
		fields := append(append([]hpack.HeaderField{}, respHeaders...), hpack.HeaderField{Name: "grpc-status", Value: strconv.Itoa(int(code))})
		if s.Message() != "" {
			fields = append(fields, hpack.HeaderField{Name: "grpc-message", Value: encodeGrpcMessage(s.Message())})
		}
		if p := s.Proto(); len(p.Details) > 0 {
			if b, merr := proto.Marshal(p); merr == nil {
				fields = append(fields, hpack.HeaderField{Name: "grpc-status-details-bin", Value: base64.RawStdEncoding.EncodeToString(b)})
			}
		}
		c.dw.headers(st.down, fields, true, false)
	} else {
		c.dw.headers(st.down, respHeaders, false, false)
		data := make([]byte, 5, 5+len(resp))
		binary.BigEndian.PutUint32(data[1:], uint32(len(resp)))
		data = append(data, resp...)
		for len(data) > 0 {
			n, werr := c.reserveUpTo(st, int64(min(len(data), sendFrameMax)), false)
			if werr != nil {
				c.observeOnce(st, codes.Canceled)
				return
			}
			c.dw.frame(frameData, 0, st.down, data[:n], false)
			data = data[n:]
		}
		c.dw.headers(st.down, []hpack.HeaderField{{Name: "grpc-status", Value: "0"}}, true, false)
	}
	c.mu.Lock()
	endDown := st.endDown
	c.forget(st)
	c.mu.Unlock()
	if !endDown { // answered before the caller finished sending: stop it
		c.dw.frame(frameRSTStream, 0, st.down, u32(errCodeNo), false)
	}
	c.dw.flush()
	c.observeOnce(st, code)
}
