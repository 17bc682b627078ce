// Package cniplugin is what holdfast's two CNI plugins share: the pod
// identity from CNI_ARGS, the spec versions they support and their log
// file, and the CNI codes of environment faults. It stays lean (standard
// library, the CNI types and internal/atomicfile only): the
// plugins are exec'd once per pod.
package cniplugin

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
)

// Versions are the CNI spec versions both plugins serve.
var Versions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// maxLogSize is where a plugin log is rotated to <log>.1.
const maxLogSize = 4 << 20

// PodArgs is the pod identity kubelet's runtime passes in CNI_ARGS.
type PodArgs struct{ Namespace, Name, UID string }

// ParseArgs reads K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID from
// CNI_ARGS; other keys are ignored. A pair without "=" is an error that
// names the plugin and the pair, and so is a namespace or pod name holding
// "/": Kubernetes forbids it in both, and the pin key joins them with "/",
// so namespace "a/b" name "c" and namespace "a" name "b/c" would share one
// key (and one pinned IP and MAC).
func ParseArgs(plugin, s string) (PodArgs, error) {
	var p PodArgs
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return p, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("%s: CNI_ARGS pair %q has no \"=\"", plugin, kv), "")
		}
		switch k {
		case "K8S_POD_NAMESPACE", "K8S_POD_NAME":
			if strings.Contains(v, "/") {
				return p, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("%s: CNI_ARGS %s=%q holds \"/\", which Kubernetes forbids in namespaces and pod names", plugin, k, v), "")
			}
			if k == "K8S_POD_NAMESPACE" {
				p.Namespace = v
			} else {
				p.Name = v
			}
		case "K8S_POD_UID":
			p.UID = v
		}
	}
	return p, nil
}

// EnvCode is the CNI spec's code for an error of the node's environment:
// 11 (try again later) when another plugin holds a lock for too long, 5
// (I/O failure) when a file operation failed (a lock path that is a
// directory, a data dir that is a regular file, a read-only or full disk),
// and fallback for anything else.
func EnvCode(err error, fallback uint) uint {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.Is(err, atomicfile.ErrLockTimeout):
		return types.ErrTryAgainLater
	case errors.As(err, &pe), errors.As(err, &le):
		return types.ErrIOFailure
	}
	return fallback
}

// OpenLog returns a logger appending to dataDir/file (stdout carries only
// the CNI result), or a discarding one when the data dir does not exist and
// create is false (DEL of something never added must not create state).
func OpenLog(dataDir, file, plugin string, create bool) (*slog.Logger, func()) {
	discard := slog.New(slog.DiscardHandler)
	if !create {
		if _, err := os.Stat(dataDir); err != nil {
			return discard, func() {}
		}
	} else if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return discard, func() {}
	}
	path := filepath.Join(dataDir, file)
	if st, err := os.Stat(path); err == nil && st.Size() > maxLogSize {
		_ = os.Rename(path, path+".1")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return discard, func() {}
	}
	return slog.New(slog.NewTextHandler(f, nil)).With("plugin", plugin, "pid", os.Getpid()), func() { f.Close() }
}
