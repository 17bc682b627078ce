package install

import (
	"fmt"
	"slices"
	"strings"

	"github.com/holdfast-edge/holdfast/install/containerdconf"
)

// DefaultContainerdConfig is where containerd 1.x and 2.x read their config.
const DefaultContainerdConfig = "/etc/containerd/config.toml"

// fromContainerd reads containerd's config (version 2 or 3) and fills in
// what the options leave empty from it: the CNI conf dir, the CNI bin dir
// (containerd's first) and the runtime endpoint the shim relays to. A value
// the options set wins; where containerd's config says otherwise, a note
// says so (holdfast's conflist or plugins there would not be loaded, or the
// shim would relay to a socket containerd does not serve). It returns the
// notes, the first saying what it read.
func (o *Options) fromContainerd() ([]string, error) {
	if o.ContainerdConfig == "" {
		o.ContainerdConfig = DefaultContainerdConfig
	}
	c, found, err := containerdconf.Load(o.Root, o.ContainerdConfig)
	if err != nil {
		return nil, err
	}
	src := fmt.Sprintf("%s (config version %d)", o.ContainerdConfig, c.Version)
	if !found {
		src = fmt.Sprintf("no %s: containerd's defaults", o.ContainerdConfig)
	}
	if c.MaxConfNum != 1 {
		return nil, fmt.Errorf("%s: containerd loads %d CNI configs (max_conf_num; 0 is all), so every pod would get both holdfast's conflist and the one it chains into: set max_conf_num = 1",
			o.ContainerdConfig, c.MaxConfNum)
	}
	notes := []string{fmt.Sprintf("containerd: %s: CRI %s, CNI configs %s, plugins %s, sandbox image %s (keep it in the image store: offline relaunch needs it)",
		src, c.Endpoint(), c.CNIConfDir, strings.Join(c.CNIBinDirs, ", "), c.SandboxImage)}
	mismatch := func(flag, v, what, theirs string) {
		if found {
			notes = append(notes, fmt.Sprintf("--%s %s is used, but containerd (%s) %s %s", flag, v, o.ContainerdConfig, what, theirs))
		}
	}
	switch {
	case o.CNIConfDir == "":
		o.CNIConfDir = c.CNIConfDir
	case o.CNIConfDir != c.CNIConfDir:
		mismatch("cni-conf-dir", o.CNIConfDir, "reads CNI configs from", c.CNIConfDir)
	}
	switch {
	case o.CNIBinDir == "":
		o.CNIBinDir = c.CNIBinDirs[0]
	case !slices.Contains(c.CNIBinDirs, o.CNIBinDir):
		mismatch("cni-bin-dir", o.CNIBinDir, "looks for CNI plugins only in", strings.Join(c.CNIBinDirs, ", "))
	}
	switch {
	case o.RuntimeEndpoint == "":
		o.RuntimeEndpoint = c.Endpoint()
	case o.RuntimeEndpoint != c.Endpoint():
		mismatch("runtime-endpoint", o.RuntimeEndpoint, "serves CRI on", c.Endpoint())
	}
	return notes, nil
}
