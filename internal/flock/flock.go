// Package flock is holdfast's one exclusive file lock with a timeout
// (the IPAM store's and the chained plugin's overlay lock). It owns only
// the lock files its callers name; it never writes their contents.
package flock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrTimeout is returned (wrapped) when the lock is not obtained in time.
var ErrTimeout = errors.New("timed out waiting for the lock")

// Lock opens (creating it and its directory) the lock file at path and
// takes an exclusive flock on it, waiting up to timeout. Closing the
// returned file releases the lock.
func Lock(path string, timeout time.Duration) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create lock dir of %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := lockFile(f, timeout); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// lockFile takes an exclusive flock on f, blocking (so waiters are served
// in the kernel's order, with no polling delay) for at most timeout. On
// timeout the blocked flock is abandoned: if it succeeds later the helper
// releases it at once.
func lockFile(f *os.File, timeout time.Duration) error {
	fd := int(f.Fd())
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err == nil {
		return nil
	} else if !errors.Is(err, unix.EWOULDBLOCK) {
		return fmt.Errorf("flock: %w", err)
	}
	dup, err := unix.Dup(fd) // the helper owns its own descriptor of the open file
	if err != nil {
		return fmt.Errorf("dup lock fd: %w", err)
	}
	w := &waiter{done: make(chan error, 1)}
	go w.wait(dup)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-w.done:
		if err != nil {
			return fmt.Errorf("flock: %w", err)
		}
		return nil
	case <-timer.C:
		return w.abandon(timeout)
	}
}

// waiter is one blocked flock and whether its caller still wants it.
type waiter struct {
	mu                  sync.Mutex
	acquired, abandoned bool
	done                chan error
}

func (w *waiter) wait(dup int) {
	var err error
	for {
		if err = unix.Flock(dup, unix.LOCK_EX); !errors.Is(err, unix.EINTR) {
			break
		}
	}
	w.mu.Lock()
	if w.abandoned && err == nil {
		unix.Flock(dup, unix.LOCK_UN)
	}
	w.acquired = err == nil && !w.abandoned
	w.mu.Unlock()
	unix.Close(dup)
	w.done <- err
}

// abandon gives up on the lock unless it was taken in the meantime.
func (w *waiter) abandon(timeout time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.acquired {
		return nil
	}
	w.abandoned = true
	return fmt.Errorf("%w after %s", ErrTimeout, timeout)
}
