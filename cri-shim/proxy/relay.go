package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A relayConn is one caller connection and the runtime connection the
// relay opened for it. Two pumps, one per direction, each read frames from
// one side and write them to the other from the goroutine that read them:
// a relayed call costs the relay one wakeup each way, as a byte pump does.
//
// What the relay changes on the way:
//   - stream IDs: the runtime sees only relayed streams, numbered in the
//     order the relay opened them (byDown, byUp map them);
//   - header blocks: decoded and encoded again per hop (each hop has its own
//     HPACK context); SETTINGS_HEADER_TABLE_SIZE is applied to the hop's
//     encoder and not passed on;
//   - flow control: windows are end to end for relayed streams; the relay
//     credits what it consumes itself (intercepted requests, frames of
//     closed streams) and holds back the caller's connection credit for
//     what it sent itself (intercepted answers), so the runtime never
//     believes in more window than the caller granted; connection credit
//     is passed on in batches (creditBatch).
//
// DATA frames of relayed streams pass unchanged but for the stream ID;
// PINGs are answered on the hop they came from.
type relayConn struct {
	s            *Server
	down, up     net.Conn // the caller (kubelet), the runtime
	downR, upR   *bufio.Reader
	dw, uw       *hopWriter
	decDown      *hpack.Decoder // header blocks from the caller (read by pumpUp)
	decUp        *hpack.Decoder // header blocks from the runtime (read by pumpDown)
	ctx          context.Context
	cancel       context.CancelFunc
	mu           sync.Mutex
	cond         *sync.Cond
	byDown       map[uint32]*stream
	byUp         map[uint32]*stream
	nextUp       uint32
	maxDown      uint32 // highest stream the caller opened
	sendConn     int64  // connection window the caller grants
	owed         int64  // caller's connection credit still to hold back from the runtime
	kView, kHeld int64  // the caller's connection window as it sees it; credit for it not passed on yet
	cView, cHeld int64  // the same for the runtime
	peerInitWin  int64  // caller's SETTINGS_INITIAL_WINDOW_SIZE
	upGone       bool   // the runtime sent GOAWAY or closed
	draining     bool   // the relay sent GOAWAY (Stop)
	drainLast    uint32
	closed       bool
	locals       int // answers being made by the relay
	blockBuf     []byte
	blockBufDown []byte
}

type stream struct {
	down, up uint32
	local    bool // answered by the relay (intercepted, or refused here)
	route    *route
	method   string
	start    time.Time
	endDown  bool // the caller half-closed
	endUp    bool // the runtime ended the stream
	observed bool
	check    *methodInfo // a relayed known unary request not yet checked
	msg      []byte      // request bytes collected (local, or being checked)
	sendWin  int64       // stream window the caller grants (local)
	cancel   context.CancelFunc
	reset    bool // the caller reset it (local)
	fields   []hpack.HeaderField
}

func newRelayConn(s *Server, down, up net.Conn) *relayConn {
	downIO, upIO := newRawIO(down), newRawIO(up)
	c := &relayConn{
		s: s, down: down, up: up,
		downR: bufio.NewReaderSize(downIO, 32<<10), upR: bufio.NewReaderSize(upIO, 32<<10),
		dw: newHopWriter(downIO), uw: newHopWriter(upIO),
		decDown: hpack.NewDecoder(4096, nil), decUp: hpack.NewDecoder(4096, nil),
		byDown: map[uint32]*stream{}, byUp: map[uint32]*stream{},
		nextUp: 1, sendConn: initialWindow, peerInitWin: initialWindow, kView: initialWindow, cView: initialWindow,
	}
	c.decDown.SetMaxStringLength(maxHeaderBlock)
	c.decUp.SetMaxStringLength(maxHeaderBlock)
	c.cond = sync.NewCond(&c.mu)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// localDrain bounds how long a connection whose runtime side closed waits
// for the answers the relay is still making before it closes.
const localDrain = 10 * time.Second

// run relays until either side ends.
func (c *relayConn) run() {
	kubeDone, rtDone := make(chan error, 1), make(chan error, 1)
	go func() { kubeDone <- c.pumpUp() }()
	go func() { rtDone <- c.pumpDown() }()
	select {
	case <-kubeDone:
		c.close()
		<-rtDone
	case <-rtDone:
		kubeEnded := make(chan struct{})
		go func() { <-kubeDone; c.close(); close(kubeEnded) }() // ends runtimeGone's wait
		c.runtimeGone()
		c.close()
		<-kubeEnded
	}
}

// close ends the connection; calling it again does nothing more.
func (c *relayConn) close() {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	streams := make([]*stream, 0, len(c.byDown))
	for _, st := range c.byDown {
		streams = append(streams, st)
	}
	c.byDown, c.byUp = map[uint32]*stream{}, map[uint32]*stream{}
	c.mu.Unlock()
	for _, st := range streams {
		c.observeOnce(st, codes.Unavailable)
	}
	c.cancel()
	c.down.Close()
	c.up.Close()
}

// runtimeGone: the runtime closed its side. Relayed calls cannot go on;
// the caller is told to go away, answers under way are let finish.
func (c *relayConn) runtimeGone() {
	c.mu.Lock()
	c.upGone = true
	last := c.maxDown
	c.mu.Unlock()
	c.dw.frame(frameGoAway, 0, 0, append(u32(last), u32(errCodeNo)...), true)
	deadline := time.AfterFunc(localDrain, func() {
		c.mu.Lock()
		c.closed = true
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer deadline.Stop()
	c.mu.Lock()
	for c.locals > 0 && !c.closed {
		c.cond.Wait()
	}
	c.mu.Unlock()
}

// drain sends GOAWAY to the caller: streams it opens from now on are
// refused.
func (c *relayConn) drain() {
	c.mu.Lock()
	if c.draining {
		c.mu.Unlock()
		return
	}
	c.draining, c.drainLast = true, c.maxDown
	last := c.drainLast
	c.mu.Unlock()
	c.dw.frame(frameGoAway, 0, 0, append(u32(last), u32(errCodeNo)...), true)
}

// idle reports whether no call is under way.
func (c *relayConn) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byDown) == 0 && c.locals == 0
}

// readBlock reads a header block: the HEADERS fragment p and the
// CONTINUATION frames after it.
func readBlock(r *bufio.Reader, h frameHeader, p []byte, buf *[]byte, scratch *[]byte) ([]byte, error) {
	frag, err := unpad(h, p)
	if err != nil {
		return nil, err
	}
	block := append((*buf)[:0], frag...)
	for end := h.has(flagEndHeaders); !end; {
		ch, cp, err := readFrame(r, scratch)
		if err != nil {
			return nil, err
		}
		if ch.typ != frameContinuation || ch.stream != h.stream {
			return nil, fmt.Errorf("%w: header block interrupted by frame type %d", errProtocol, ch.typ)
		}
		if len(block)+len(cp) > maxHeaderBlock {
			return nil, fmt.Errorf("%w: header block over %d bytes", errProtocol, maxHeaderBlock)
		}
		block = append(block, cp...)
		end = ch.has(flagEndHeaders)
	}
	*buf = block
	return block, nil
}

// pumpUp reads the caller's frames and writes the runtime's.
func (c *relayConn) pumpUp() error {
	var pre [len(preface)]byte
	if _, err := io.ReadFull(c.downR, pre[:]); err != nil {
		return err
	}
	if string(pre[:]) != preface {
		return fmt.Errorf("%w: no HTTP/2 client preface", errProtocol)
	}
	if err := c.uw.raw(pre[:]); err != nil {
		return err
	}
	var buf, scratch []byte
	for {
		h, p, err := readFrame(c.downR, &buf)
		if err != nil {
			return err
		}
		switch h.typ {
		case frameData:
			if err = c.creditKube(-int64(h.length)); err == nil {
				err = c.upData(h, p)
			}
		case frameHeaders:
			var block []byte
			if block, err = readBlock(c.downR, h, p, &c.blockBufDown, &scratch); err == nil {
				err = c.upHeaders(h, block)
			}
		case frameRSTStream:
			err = c.upReset(h, p)
		case frameSettings:
			err = c.upSettings(h, p)
		case framePing:
			err = pong(c.dw, h, p)
		case frameGoAway:
			err = c.uw.frame(h.typ, h.flags, h.stream, p, false)
		case frameWindowUpdate:
			err = c.upWindow(h, p)
		case framePushPromise, frameContinuation:
			err = fmt.Errorf("%w: unexpected frame type %d from the caller", errProtocol, h.typ)
		}
		if err != nil {
			return err
		}
		if c.downR.Buffered() == 0 {
			if err := c.uw.flush(); err != nil {
				return err
			}
			if err := c.dw.flush(); err != nil {
				return err
			}
		}
	}
}

// pumpDown reads the runtime's frames and writes the caller's.
func (c *relayConn) pumpDown() error {
	var buf, scratch []byte
	for {
		h, p, err := readFrame(c.upR, &buf)
		if err != nil {
			return err
		}
		switch h.typ {
		case frameData:
			if err = c.creditRuntime(-int64(h.length)); err == nil {
				err = c.downData(h, p)
			}
		case frameHeaders:
			var block []byte
			if block, err = readBlock(c.upR, h, p, &c.blockBuf, &scratch); err == nil {
				err = c.downHeaders(h, block)
			}
		case frameRSTStream:
			err = c.downReset(h, p)
		case frameSettings:
			err = c.downSettings(h, p)
		case framePing:
			err = pong(c.uw, h, p)
		case frameGoAway:
			err = c.downGoAway(p)
		case frameWindowUpdate:
			err = c.downWindow(h, p)
		case framePushPromise, frameContinuation:
			err = fmt.Errorf("%w: unexpected frame type %d from the runtime", errProtocol, h.typ)
		}
		if err != nil {
			return err
		}
		if c.upR.Buffered() == 0 {
			if err := c.dw.flush(); err != nil {
				return err
			}
			if err := c.uw.flush(); err != nil {
				return err
			}
		}
	}
}

// pong answers a PING on the hop it came from. PINGs are the hop's own
// business (keepalive, grpc-go's BDP estimate): passed on, a caller's ping
// after a call the relay answered itself would look like ping abuse to the
// runtime (GOAWAY "too_many_pings"), and each would cost both peers a
// wakeup. The relay sends no PINGs, so ACKs are dropped.
func pong(w *hopWriter, h frameHeader, p []byte) error {
	if h.stream != 0 || len(p) != 8 {
		return fmt.Errorf("%w: malformed PING", errProtocol)
	}
	if h.has(flagAck) {
		return nil
	}
	return w.frame(framePing, flagAck, 0, p, false)
}

func (c *relayConn) creditDown(stream uint32, n uint32) error {
	if n == 0 {
		return nil
	}
	if stream == 0 {
		return c.creditKube(int64(n))
	}
	return c.dw.frame(frameWindowUpdate, 0, stream, u32(n), false)
}

// Connection-level credit is passed on in batches: grpc-go grants a few
// bytes after nearly every message, and each WINDOW_UPDATE passed on alone
// would wake the peer once more per call. Credit is held back only while
// the peer's window, as the peer sees it, stays above creditLow, so the
// peer never waits for credit the relay holds.
const (
	creditBatch = 16 << 10
	creditLow   = 32 << 10
)

// creditKube accounts the caller's connection window: n < 0 for DATA the
// caller sent, n > 0 for credit granted to it (by the runtime or the
// relay). It writes a WINDOW_UPDATE when a batch is due.
func (c *relayConn) creditKube(n int64) error {
	c.mu.Lock()
	w := takeCredit(&c.kView, &c.kHeld, n)
	c.mu.Unlock()
	if w == 0 {
		return nil
	}
	return c.dw.frame(frameWindowUpdate, 0, 0, u32(w), false)
}

// creditRuntime is creditKube for the runtime's connection window.
func (c *relayConn) creditRuntime(n int64) error {
	c.mu.Lock()
	w := takeCredit(&c.cView, &c.cHeld, n)
	c.mu.Unlock()
	if w == 0 {
		return nil
	}
	return c.uw.frame(frameWindowUpdate, 0, 0, u32(w), false)
}

func takeCredit(view, held *int64, n int64) uint32 {
	if n < 0 {
		*view += n
	} else {
		*held += n
	}
	if *held == 0 || (*held < creditBatch && *view >= creditLow) {
		return 0
	}
	w := min(*held, 0x7fffffff)
	*held -= w
	*view += w
	return uint32(w)
}

// forget removes a stream from both maps (c.mu held).
func (c *relayConn) forget(st *stream) {
	if c.byDown[st.down] == st {
		delete(c.byDown, st.down)
	}
	if st.up != 0 && c.byUp[st.up] == st {
		delete(c.byUp, st.up)
	}
}

func (c *relayConn) observeOnce(st *stream, code codes.Code) {
	c.mu.Lock()
	done := st.observed
	st.observed = true
	c.mu.Unlock()
	if !done && c.s.observe != nil {
		c.s.observe(st.method, st.route != nil, code, time.Since(st.start))
	}
}

func (c *relayConn) upHeaders(h frameHeader, block []byte) error {
	fields, err := c.decDown.DecodeFull(block)
	if err != nil {
		return fmt.Errorf("%w: caller's header block: %v", errProtocol, err)
	}
	if h.stream == 0 || h.stream%2 == 0 {
		return fmt.Errorf("%w: caller opened stream %d", errProtocol, h.stream)
	}
	end := h.has(flagEndStream)
	c.mu.Lock()
	st := c.byDown[h.stream]
	if st != nil { // trailers from the caller
		if st.local {
			again := st.endDown
			st.endDown = st.endDown || end
			c.mu.Unlock()
			if end && !again {
				c.startLocal(st)
			}
			return nil
		}
		st.endDown = st.endDown || end
		up := st.up
		if st.endDown && st.endUp {
			c.forget(st)
		}
		c.mu.Unlock()
		return c.uw.headers(up, fields, end, false)
	}
	if h.stream <= c.maxDown { // a stream already closed
		c.mu.Unlock()
		return nil
	}
	c.maxDown = h.stream
	method := ""
	for _, f := range fields {
		if f.Name == ":path" {
			method = f.Value
		}
	}
	st = &stream{down: h.stream, method: method, start: time.Now(), endDown: end, fields: fields}
	if c.draining {
		c.mu.Unlock()
		return c.dw.frame(frameRSTStream, 0, h.stream, u32(errCodeRefused), false)
	}
	if r, ok := c.s.routes[method]; ok {
		st.local, st.route, st.sendWin = true, &r, c.peerInitWin
		c.byDown[st.down] = st
		c.mu.Unlock()
		if end {
			c.startLocal(st)
		}
		return nil
	}
	if c.upGone {
		c.mu.Unlock()
		return c.dw.frame(frameRSTStream, 0, h.stream, u32(errCodeRefused), false)
	}
	st.up = c.nextUp
	c.nextUp += 2
	if mi := lookupMethod(method); mi.req != nil && mi.unary && !end {
		st.check = &mi
	}
	st.fields = nil
	c.byDown[st.down], c.byUp[st.up] = st, st
	c.mu.Unlock()
	return c.uw.headers(st.up, fields, end, false)
}

func (c *relayConn) upData(h frameHeader, p []byte) error {
	if h.stream == 0 {
		return fmt.Errorf("%w: DATA on stream 0", errProtocol)
	}
	end := h.has(flagEndStream)
	c.mu.Lock()
	st := c.byDown[h.stream]
	if st == nil || st.endDown {
		c.mu.Unlock()
		return c.creditDown(0, h.length) // a closed stream: its bytes come back to the caller here
	}
	if !st.local && st.check == nil {
		st.endDown = end
		up := st.up
		if st.endDown && st.endUp {
			c.forget(st)
		}
		c.mu.Unlock()
		return c.uw.frame(frameData, h.flags, up, p, false)
	}
	data, err := unpad(h, p)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	if st.local {
		st.endDown = end
		tooBig := len(st.msg)+len(data) > MaxMsgSize+5
		if !tooBig {
			st.msg = append(st.msg, data...)
		}
		c.mu.Unlock()
		if err := c.creditDown(0, h.length); err != nil {
			return err
		}
		if tooBig {
			c.refuse(st, status.Errorf(codes.ResourceExhausted, "request of %s larger than %d bytes", st.method, MaxMsgSize))
			return nil
		}
		if !end {
			return c.creditDown(st.down, uint32(len(data)))
		}
		c.startLocal(st)
		return nil
	}
	// A relayed request of a known unary method: every frame but the one
	// that completes the message goes on at once; that one only once the
	// message is valid. Without it the runtime never has a whole message,
	// so a refused request is never served.
	st.msg = append(st.msg, data...)
	verdict, done := checkPrefix(*st.check, st.method, st.msg, end)
	if done {
		st.check, st.msg = nil, nil
	}
	if verdict == nil {
		st.endDown = end
		up := st.up
		if st.endDown && st.endUp {
			c.forget(st)
		}
		c.mu.Unlock()
		return c.uw.frame(frameData, h.flags, up, p, false)
	}
	// Refused: the runtime's stream is reset, the caller answered here.
	up := st.up
	delete(c.byUp, st.up)
	st.up, st.local, st.endDown = 0, true, end
	c.mu.Unlock()
	if err := c.uw.frame(frameRSTStream, 0, up, u32(errCodeCancel), false); err != nil {
		return err
	}
	if err := c.creditDown(0, h.length); err != nil {
		return err
	}
	c.refuse(st, verdict)
	return nil
}

// checkPrefix looks at the request bytes of a known unary method seen so
// far. done: the verdict is in (nil: valid, pass it on); !done: more bytes
// are needed (and the verdict is nil).
func checkPrefix(mi methodInfo, method string, msg []byte, end bool) (verdict error, done bool) {
	if len(msg) < 5 {
		if end {
			return status.Errorf(codes.InvalidArgument, "malformed %s: truncated gRPC message", mi.req.Descriptor().FullName()), true
		}
		return nil, false
	}
	switch msg[0] {
	case 0:
	case 1:
		return status.Errorf(codes.Unimplemented, "%s: the CRI shim does not take compressed requests", method), true
	default:
		return status.Errorf(codes.InvalidArgument, "malformed %s: gRPC message flag %d", mi.req.Descriptor().FullName(), msg[0]), true
	}
	n := binary.BigEndian.Uint32(msg[1:5])
	if n > MaxMsgSize {
		return status.Errorf(codes.ResourceExhausted, "request of %s larger than %d bytes", method, MaxMsgSize), true
	}
	if uint32(len(msg)-5) < n {
		if end {
			return status.Errorf(codes.InvalidArgument, "malformed %s: truncated gRPC message", mi.req.Descriptor().FullName()), true
		}
		return nil, false
	}
	return checkRequest(mi, msg[5:5+n]), true
}

func (c *relayConn) upReset(h frameHeader, p []byte) error {
	if len(p) != 4 || h.stream == 0 {
		return fmt.Errorf("%w: malformed RST_STREAM", errProtocol)
	}
	c.mu.Lock()
	st := c.byDown[h.stream]
	if st == nil {
		c.mu.Unlock()
		return nil
	}
	c.forget(st)
	st.reset = true
	cancel, up, local := st.cancel, st.up, st.local
	c.cond.Broadcast()
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.observeOnce(st, codes.Canceled)
	if local {
		return nil
	}
	return c.uw.frame(frameRSTStream, 0, up, p, false)
}

func (c *relayConn) upSettings(h frameHeader, p []byte) error {
	ss, err := parseSettings(h, p)
	if err != nil {
		return err
	}
	if h.has(flagAck) {
		return c.uw.frame(frameSettings, flagAck, 0, nil, false)
	}
	var fwd []setting
	for _, s := range ss {
		switch s.id {
		case settingHeaderTableSize:
			c.dw.setTableLimit(s.val)
			continue
		case settingInitialWindowSize:
			c.mu.Lock()
			delta := int64(s.val) - c.peerInitWin
			c.peerInitWin = int64(s.val)
			for _, st := range c.byDown {
				if st.local {
					st.sendWin += delta
				}
			}
			c.cond.Broadcast()
			c.mu.Unlock()
		}
		fwd = append(fwd, s)
	}
	return c.uw.frame(frameSettings, 0, 0, appendSettings(nil, fwd), false)
}

func (c *relayConn) upWindow(h frameHeader, p []byte) error {
	inc, err := parseWindowUpdate(h, p)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if h.stream == 0 {
		c.sendConn += int64(inc)
		held := min(int64(inc), c.owed)
		c.owed -= held
		c.cond.Broadcast()
		c.mu.Unlock()
		if fwd := int64(inc) - held; fwd > 0 {
			return c.creditRuntime(fwd)
		}
		return nil
	}
	st := c.byDown[h.stream]
	switch {
	case st == nil:
		c.mu.Unlock()
		return nil
	case st.local:
		st.sendWin += int64(inc)
		c.cond.Broadcast()
		c.mu.Unlock()
		return nil
	}
	up := st.up
	c.mu.Unlock()
	return c.uw.frame(frameWindowUpdate, 0, up, p, false)
}

func (c *relayConn) downHeaders(h frameHeader, block []byte) error {
	fields, err := c.decUp.DecodeFull(block)
	if err != nil {
		return fmt.Errorf("%w: runtime's header block: %v", errProtocol, err)
	}
	end := h.has(flagEndStream)
	c.mu.Lock()
	st := c.byUp[h.stream]
	if st == nil {
		c.mu.Unlock()
		return nil
	}
	if end {
		st.endUp = true
		if st.endDown {
			c.forget(st)
		}
	}
	down := st.down
	c.mu.Unlock()
	if err := c.dw.headers(down, fields, end, false); err != nil {
		return err
	}
	if end {
		c.observeOnce(st, grpcCode(fields))
	}
	return nil
}

// grpcCode is the grpc-status of a trailer block.
func grpcCode(fields []hpack.HeaderField) codes.Code {
	for _, f := range fields {
		if f.Name == "grpc-status" {
			if n, err := strconv.ParseUint(f.Value, 10, 32); err == nil {
				return codes.Code(n)
			}
		}
	}
	return codes.Unknown
}

func (c *relayConn) downData(h frameHeader, p []byte) error {
	c.mu.Lock()
	st := c.byUp[h.stream]
	if st == nil {
		c.mu.Unlock()
		if h.length == 0 {
			return nil
		}
		return c.creditRuntime(int64(h.length)) // a closed stream: credit the runtime here
	}
	down := st.down
	if h.has(flagEndStream) {
		st.endUp = true
		if st.endDown {
			c.forget(st)
		}
	}
	c.mu.Unlock()
	if err := c.reserve(nil, int64(h.length)); err != nil {
		return err
	}
	return c.dw.frame(frameData, h.flags, down, p, false)
}

// reserve waits until the caller's connection window (and, for a stream the
// relay answers, its stream window) holds n bytes and takes them. With a
// stream it takes what there is, at least 1 byte, and returns how much.
func (c *relayConn) reserve(st *stream, n int64) error {
	_, err := c.reserveUpTo(st, n, true)
	return err
}

func (c *relayConn) reserveUpTo(st *stream, n int64, all bool) (int64, error) {
	if n == 0 {
		return 0, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.closed || (st != nil && st.reset) {
			return 0, io.ErrClosedPipe
		}
		avail := c.sendConn
		if st != nil {
			avail = min(avail, st.sendWin)
		}
		if (all && avail >= n) || (!all && avail > 0) {
			got := min(n, avail)
			c.sendConn -= got
			if st != nil {
				st.sendWin -= got
				c.owed += got
			}
			return got, nil
		}
		// Whatever is buffered for the caller must reach it, or it never
		// grants more.
		c.mu.Unlock()
		err := c.dw.flush()
		c.mu.Lock()
		if err != nil {
			return 0, err
		}
		if c.closed {
			continue
		}
		avail = c.sendConn
		if st != nil {
			avail = min(avail, st.sendWin)
		}
		if (all && avail >= n) || (!all && avail > 0) {
			continue
		}
		c.cond.Wait()
	}
}

func (c *relayConn) downReset(h frameHeader, p []byte) error {
	if len(p) != 4 {
		return fmt.Errorf("%w: malformed RST_STREAM", errProtocol)
	}
	c.mu.Lock()
	st := c.byUp[h.stream]
	if st == nil {
		c.mu.Unlock()
		return nil
	}
	c.forget(st)
	down := st.down
	c.mu.Unlock()
	code := codes.Internal
	switch binary.BigEndian.Uint32(p) {
	case errCodeCancel:
		code = codes.Canceled
	case errCodeRefused:
		code = codes.Unavailable
	}
	c.observeOnce(st, code)
	return c.dw.frame(frameRSTStream, 0, down, p, false)
}

func (c *relayConn) downSettings(h frameHeader, p []byte) error {
	ss, err := parseSettings(h, p)
	if err != nil {
		return err
	}
	if h.has(flagAck) {
		return c.dw.frame(frameSettings, flagAck, 0, nil, false)
	}
	var fwd []setting
	for _, s := range ss {
		if s.id == settingHeaderTableSize {
			c.uw.setTableLimit(s.val)
			continue
		}
		fwd = append(fwd, s)
	}
	return c.dw.frame(frameSettings, 0, 0, appendSettings(nil, fwd), false)
}

// downGoAway: the runtime takes no new streams. Relayed streams it did not
// take are refused to the caller (which may retry them: they were not
// served), and the caller is told to go away after the streams it has
// opened so far.
func (c *relayConn) downGoAway(p []byte) error {
	if len(p) < 8 {
		return fmt.Errorf("%w: malformed GOAWAY", errProtocol)
	}
	last := binary.BigEndian.Uint32(p) & 0x7fffffff
	c.mu.Lock()
	c.upGone = true
	var refused []*stream
	for up, st := range c.byUp {
		if up > last {
			refused = append(refused, st)
			c.forget(st)
		}
	}
	lastDown := c.maxDown
	c.mu.Unlock()
	for _, st := range refused {
		c.observeOnce(st, codes.Unavailable)
		if err := c.dw.frame(frameRSTStream, 0, st.down, u32(errCodeRefused), false); err != nil {
			return err
		}
	}
	return c.dw.frame(frameGoAway, 0, 0, append(u32(lastDown), p[4:]...), false)
}

func (c *relayConn) downWindow(h frameHeader, p []byte) error {
	if _, err := parseWindowUpdate(h, p); err != nil {
		return err
	}
	if h.stream == 0 {
		inc, _ := parseWindowUpdate(h, p)
		return c.creditKube(int64(inc))
	}
	c.mu.Lock()
	st := c.byUp[h.stream]
	c.mu.Unlock()
	if st == nil {
		return nil
	}
	return c.dw.frame(frameWindowUpdate, 0, st.down, p, false)
}
