package leases

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Attachment is what libcni's result cache says about one attachment.
type Attachment struct {
	ContainerID, IfName, Network, Netns string
	// Namespace and Name are the pod's, from CNI_ARGS (K8S_POD_NAMESPACE,
	// K8S_POD_NAME); empty when the runtime passed none.
	Namespace, Name string
	// Config is the network config list the attachment was added with.
	Config []byte
	Path   string
}

// cacheEntry is libcni's cachedInfo (kind cniCacheV1).
type cacheEntry struct {
	Kind        string      `json:"kind"`
	ContainerID string      `json:"containerId"`
	Config      []byte      `json:"config"`
	IfName      string      `json:"ifName"`
	NetworkName string      `json:"networkName"`
	NetNS       string      `json:"netns"`
	CniArgs     [][2]string `json:"cniArgs"`
}

// ReadCache returns the cached attachments of network (every network when
// network is empty), by container ID and ifname. A missing cache dir holds
// none; an entry of another kind or that does not parse is skipped (libcni
// itself ignores those).
func ReadCache(cacheDir, network string) (map[[2]string]Attachment, error) {
	dir := filepath.Join(cacheDir, "results")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return map[[2]string]Attachment{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("libcni cache: %w", err)
	}
	out := map[[2]string]Attachment{}
	for _, e := range ents {
		if !e.Type().IsRegular() || (network != "" && !strings.HasPrefix(e.Name(), network+"-")) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var c cacheEntry
		if json.Unmarshal(data, &c) != nil || c.Kind != "cniCacheV1" || (network != "" && c.NetworkName != network) {
			continue
		}
		a := Attachment{ContainerID: c.ContainerID, IfName: c.IfName, Network: c.NetworkName, Netns: c.NetNS, Config: c.Config, Path: p}
		for _, kv := range c.CniArgs {
			switch kv[0] {
			case "K8S_POD_NAMESPACE":
				a.Namespace = kv[1]
			case "K8S_POD_NAME":
				a.Name = kv[1]
			}
		}
		out[[2]string{a.ContainerID, a.IfName}] = a
	}
	return out, nil
}

// readIfExists returns a file's content, or nil if it does not exist.
func readIfExists(p string) ([]byte, error) {
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return data, err
}
