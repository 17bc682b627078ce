// Package kubeclient is holdfast's apiserver client: the few resources its
// components read and write (Interface, over a scheme of three API groups,
// not client-go's clientset of all of them: docs/footprint.md), informers
// over them, and the one rule that finds the config from a --kubeconfig
// value: "" or "-" is the in-cluster config (the pod's service account),
// anything else a kubeconfig file. $KUBECONFIG and ~/.kube/config are never
// read. It owns nothing and never talks to the apiserver on its own.
package kubeclient

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// InCluster is the --kubeconfig value that names the in-cluster config
// (as does the empty string).
const InCluster = "-"

// Timeout bounds every request of the clients built here: an unreachable
// apiserver (the normal state of an offline edge node) costs each caller
// at most this long per attempt.
const Timeout = 10 * time.Second

// Config is the rest config for path, with Timeout and userAgent set.
func Config(path, userAgent string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if path == "" || path == InCluster {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
	}
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %q: %w", path, err)
	}
	cfg.Timeout = Timeout
	cfg.UserAgent = userAgent
	return cfg, nil
}

// TrimManagedFields is an informer transform (cache.TransformFunc): it
// drops metadata.managedFields from each object before the informer's
// cache keeps it. No holdfast component reads them, and they are often the
// largest part of an object (docs/footprint.md). Anything that is not an
// object (a deletion tombstone) passes unchanged.
func TrimManagedFields(o any) (any, error) {
	if m, err := meta.Accessor(o); err == nil {
		m.SetManagedFields(nil)
	}
	return o, nil
}
