package proxy

import (
	"bufio"
	"bytes"
	"io"
	"sync"

	"golang.org/x/net/http2/hpack"
)

// hopWriter writes frames to one side of a relayed connection. Every writer
// of that side (the pump reading the other side, answers the relay makes
// itself) goes through it, so frames and header blocks never interleave. It
// owns the HPACK encoder of that hop: each hop has its own header
// compression context, so the relay can leave out and add streams.
type hopWriter struct {
	mu  sync.Mutex
	w   *bufio.Writer
	enc *hpack.Encoder
	hb  bytes.Buffer
	err error
}

func newHopWriter(w io.Writer) *hopWriter {
	h := &hopWriter{w: bufio.NewWriterSize(w, 32<<10)}
	h.enc = hpack.NewEncoder(&h.hb)
	return h
}

func (h *hopWriter) writeLocked(typ, flags uint8, stream uint32, payload []byte) {
	if h.err != nil {
		return
	}
	var hdr [frameHeaderLen]byte
	b := appendFrame(hdr[:0], typ, flags, stream, nil)
	n := len(payload)
	b[0], b[1], b[2] = byte(n>>16), byte(n>>8), byte(n)
	if _, err := h.w.Write(b); err != nil {
		h.err = err
		return
	}
	if _, err := h.w.Write(payload); err != nil {
		h.err = err
	}
}

func (h *hopWriter) flushLocked() {
	if h.err == nil && h.w.Buffered() > 0 {
		h.err = h.w.Flush()
	}
}

// frame writes one frame, and flushes when asked.
func (h *hopWriter) frame(typ, flags uint8, stream uint32, payload []byte, flush bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.writeLocked(typ, flags, stream, payload)
	if flush {
		h.flushLocked()
	}
	return h.err
}

// raw writes bytes that are no frame (the client preface).
func (h *hopWriter) raw(b []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil {
		_, h.err = h.w.Write(b)
	}
	return h.err
}

// headers encodes fields with this hop's encoder and writes them as one
// HEADERS frame and as many CONTINUATION frames as needed.
func (h *hopWriter) headers(stream uint32, fields []hpack.HeaderField, endStream, flush bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hb.Reset()
	for _, f := range fields {
		if err := h.enc.WriteField(f); err != nil {
			h.err = err
			return err
		}
	}
	b := h.hb.Bytes()
	typ, flags := uint8(frameHeaders), uint8(0)
	if endStream {
		flags = flagEndStream
	}
	for {
		n := min(len(b), sendFrameMax)
		if n == len(b) {
			flags |= flagEndHeaders
		}
		h.writeLocked(typ, flags, stream, b[:n])
		b = b[n:]
		if len(b) == 0 {
			break
		}
		typ, flags = frameContinuation, 0
	}
	if flush {
		h.flushLocked()
	}
	return h.err
}

// setTableLimit applies the peer's SETTINGS_HEADER_TABLE_SIZE to this hop's
// encoder.
func (h *hopWriter) setTableLimit(v uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.enc.SetMaxDynamicTableSizeLimit(v)
}

func (h *hopWriter) flush() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.flushLocked()
	return h.err
}
