package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// HTTP/2 frame types and flags (RFC 9113 section 6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20

	settingHeaderTableSize   = 0x1
	settingInitialWindowSize = 0x4

	errCodeNo      = 0x0
	errCodeRefused = 0x7
	errCodeCancel  = 0x8
)

const (
	frameHeaderLen = 9
	// sendFrameMax is the largest frame payload the relay writes itself:
	// 16384 is the smallest SETTINGS_MAX_FRAME_SIZE a peer may set, so it
	// is always allowed.
	sendFrameMax = 16384
	// initialWindow is HTTP/2's initial flow-control window.
	initialWindow = 65535
	// preface is what an HTTP/2 client sends first.
	preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	// maxHeaderBlock bounds one header block (HEADERS + CONTINUATION).
	maxHeaderBlock = 1 << 20
)

// errProtocol is a peer breaking HTTP/2; the connection is closed.
var errProtocol = errors.New("http/2 protocol error")

type frameHeader struct {
	length uint32
	typ    uint8
	flags  uint8
	stream uint32
}

func (h frameHeader) has(f uint8) bool { return h.flags&f != 0 }

// readFrame reads one frame; the payload is in buf (grown as needed) and is
// valid until the next call.
func readFrame(r *bufio.Reader, buf *[]byte) (frameHeader, []byte, error) {
	var hb [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return frameHeader{}, nil, err
	}
	h := frameHeader{
		length: uint32(hb[0])<<16 | uint32(hb[1])<<8 | uint32(hb[2]),
		typ:    hb[3],
		flags:  hb[4],
		stream: binary.BigEndian.Uint32(hb[5:]) & 0x7fffffff,
	}
	if cap(*buf) < int(h.length) {
		*buf = make([]byte, h.length)
	}
	p := (*buf)[:h.length]
	if _, err := io.ReadFull(r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return frameHeader{}, nil, err
	}
	return h, p, nil
}

// appendFrame appends one frame to b.
func appendFrame(b []byte, typ, flags uint8, stream uint32, payload []byte) []byte {
	n := len(payload)
	b = append(b, byte(n>>16), byte(n>>8), byte(n), typ, flags)
	b = binary.BigEndian.AppendUint32(b, stream&0x7fffffff)
	return append(b, payload...)
}

// unpad strips the padding of a DATA or HEADERS payload (and HEADERS'
// priority fields).
func unpad(h frameHeader, p []byte) ([]byte, error) {
	if h.has(flagPadded) {
		if len(p) < 1 {
			return nil, fmt.Errorf("%w: padded frame without pad length", errProtocol)
		}
		pad := int(p[0])
		p = p[1:]
		if pad > len(p) {
			return nil, fmt.Errorf("%w: padding longer than the frame", errProtocol)
		}
		p = p[:len(p)-pad]
	}
	if h.typ == frameHeaders && h.has(flagPriority) {
		if len(p) < 5 {
			return nil, fmt.Errorf("%w: HEADERS too short for its priority", errProtocol)
		}
		p = p[5:]
	}
	return p, nil
}

type setting struct {
	id  uint16
	val uint32
}

func parseSettings(h frameHeader, p []byte) ([]setting, error) {
	if h.stream != 0 || len(p)%6 != 0 || (h.has(flagAck) && len(p) != 0) {
		return nil, fmt.Errorf("%w: malformed SETTINGS", errProtocol)
	}
	var out []setting
	for i := 0; i < len(p); i += 6 {
		out = append(out, setting{binary.BigEndian.Uint16(p[i:]), binary.BigEndian.Uint32(p[i+2:])})
	}
	return out, nil
}

func appendSettings(b []byte, ss []setting) []byte {
	for _, s := range ss {
		b = binary.BigEndian.AppendUint16(b, s.id)
		b = binary.BigEndian.AppendUint32(b, s.val)
	}
	return b
}

func parseWindowUpdate(h frameHeader, p []byte) (uint32, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("%w: WINDOW_UPDATE of %d bytes", errProtocol, len(p))
	}
	return binary.BigEndian.Uint32(p) & 0x7fffffff, nil
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
