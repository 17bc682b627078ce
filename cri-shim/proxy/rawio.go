package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawIO reads and writes a socket with raw system calls, the runtime not
// told: the relay's sockets are non-blocking, so a read or write never
// blocks (when it would, the goroutine waits in the runtime's poller as
// with net.Conn). A system call made the ordinary way wakes the runtime's
// monitor thread (sysmon) whenever the process was idle before it, and the
// monitor then polls every 20 µs for a while: on a relay that is idle
// between calls that is one more thread woken per call, and on a small
// machine it cost about as much CPU as the relaying itself.
type rawIO struct {
	rc syscall.RawConn
}

// newRawIO returns the raw reader and writer of c, or c itself when it is
// no socket (net.Pipe in tests).
func newRawIO(c net.Conn) io.ReadWriter {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return rawIO{rc: rc}
}

func (r rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			r1, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // wait in the poller, then try again
			}
			n, errno = int(r1), e
			return true
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p. MSG_NOSIGNAL: a caller gone is an EPIPE error, not
// a SIGPIPE.
func (r rawIO) Write(p []byte) (int, error) {
	done := 0
	var errno syscall.Errno
	err := r.rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			r1, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[done])), uintptr(len(p)-done), unix.MSG_NOSIGNAL, 0, 0)
			switch e {
			case 0:
				done += int(r1)
			case unix.EINTR:
			case unix.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return done, err
	case errno != 0:
		return done, os.NewSyscallError("write", errno)
	}
	return done, nil
}
