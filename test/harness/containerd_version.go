package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ContainerdEnv picks the containerd every node runs: "1.6" (the default)
// is Debian's package, "2.1" is Containerd2Version built from its module
// into the cache by test/tools/build.sh. `make test` runs the containerd
// integration tests once with each.
const ContainerdEnv = "HOLDFAST_CONTAINERD"

// Containerd2Version is the containerd 2.x the harness runs; it must be the
// version test/tools/containerd/go.mod requires (a unit test checks).
const Containerd2Version = "v2.1.5"

// Containerd is one containerd build: its binaries and the config format it
// reads.
type Containerd struct {
	// Version is what HOLDFAST_CONTAINERD names: "1.6" or "2.1".
	Version string
	// Containerd and Ctr are the binaries (a name on PATH or a path).
	Containerd, Ctr string
	// ShimDir, if set, goes first on containerd's PATH, so it runs the
	// containerd-shim-runc-v2 of its own version, not Debian's.
	ShimDir string
	config  string
}

// SelectedContainerd returns the containerd HOLDFAST_CONTAINERD picks. An
// unknown value is an error naming the accepted ones; a 2.x whose binaries
// are not built yet is an error naming the command that builds them.
func SelectedContainerd() (Containerd, error) {
	switch v := os.Getenv(ContainerdEnv); v {
	case "", "1.6":
		return Containerd{Version: "1.6", Containerd: "containerd", Ctr: "ctr", config: containerdConfigV2}, nil
	case "2.1":
		dir := Containerd2Dir()
		c := Containerd{Version: v, Containerd: filepath.Join(dir, "containerd"), Ctr: filepath.Join(dir, "ctr"),
			ShimDir: dir, config: containerdConfigV3}
		for _, p := range []string{c.Containerd, c.Ctr, filepath.Join(dir, "containerd-shim-runc-v2")} {
			if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
				return c, fmt.Errorf("%s=%s: containerd %s is not built (%s missing): run test/tools/build.sh (or `make e2e-tools`)",
					ContainerdEnv, v, Containerd2Version, p)
			}
		}
		return c, nil
	default:
		return Containerd{}, fmt.Errorf("%s=%q: want 1.6 (Debian's containerd) or 2.1 (containerd %s built into the cache)",
			ContainerdEnv, v, Containerd2Version)
	}
}

// Containerd2Dir is where test/tools/build.sh puts containerd 2.x's
// containerd, containerd-shim-runc-v2 and ctr.
func Containerd2Dir() string {
	return filepath.Join(CacheDir(), "containerd-"+Containerd2Version)
}

// env is containerd's environment: this process's, with ShimDir first on
// PATH.
func (c Containerd) env() []string {
	env := os.Environ()
	if c.ShimDir == "" {
		return env
	}
	for i, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			env[i] = "PATH=" + c.ShimDir + ":" + strings.TrimPrefix(kv, "PATH=")
			return env
		}
	}
	return append(env, "PATH="+c.ShimDir+":/usr/sbin:/usr/bin:/sbin:/bin")
}

// Both configs take, in order: root, state, grpc address, ttrpc address,
// opt dir, sandbox image, CNI bin dir, CNI conf dir, runc root.
// restrict_oom_score_adj: runc may not lower oom_score_adj on these
// machines. The sandbox image is pinned so no GC or pull ever touches it
// (no registry exists).

// containerdConfigV2 is containerd 1.6's format: one CRI plugin.
const containerdConfigV2 = `version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[5]q
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %[6]q
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    disable_apparmor = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %[7]q
      conf_dir = %[8]q
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = %[9]q
`

// containerdConfigV3 is containerd 2.x's format: the CRI plugin is split
// into images (sandbox image under pinned_images), runtime (CNI, runc,
// the OOM and netns settings) and the gRPC server (streaming).
const containerdConfigV3 = `version = 3
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[5]q
  [plugins."io.containerd.cri.v1.images"]
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = %[6]q
  [plugins."io.containerd.cri.v1.runtime"]
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    disable_apparmor = true
    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = [%[7]q]
      conf_dir = %[8]q
      max_conf_num = 1
    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = %[9]q
  [plugins."io.containerd.grpc.v1.cri"]
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
`
