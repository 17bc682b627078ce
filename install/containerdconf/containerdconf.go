// Package containerdconf reads, from containerd's config.toml, what
// holdfast's install relies on: where containerd looks for CNI configs and
// plugins, how many CNI configs it loads, its sandbox image and its CRI
// endpoint (which kubelet is pointed away from, and the shim relays to).
// It reads config version 2 (containerd 1.x, and 2.x migrating it) and
// version 3 (containerd 2.x), with the files its imports name. It never
// writes containerd's config.
package containerdconf

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"

	"github.com/pelletier/go-toml/v2"
)

// Config is what holdfast needs from containerd's config, with containerd's
// defaults filled in for what the file does not set.
type Config struct {
	// Version is the file's format: 2 or 3.
	Version int
	// Address is containerd's gRPC socket path ([grpc] address).
	Address string
	// CNIConfDir is where containerd loads CNI configs from.
	CNIConfDir string
	// CNIBinDirs are where containerd looks for CNI plugins, in order.
	CNIBinDirs []string
	// MaxConfNum is how many CNI configs containerd loads (0: all).
	MaxConfNum int
	// SandboxImage is the pause image containerd creates sandboxes from.
	SandboxImage string
}

// Endpoint is the CRI endpoint of Address, as kubelet and the shim name it.
func (c Config) Endpoint() string { return "unix://" + c.Address }

// Defaults are containerd's built-in values for a node without a config
// file (or a file that sets none of them).
func Defaults(version int) Config {
	c := Config{Version: version, Address: "/run/containerd/containerd.sock", CNIConfDir: "/etc/cni/net.d",
		CNIBinDirs: []string{"/opt/cni/bin"}, MaxConfNum: 1, SandboxImage: "registry.k8s.io/pause:3.10"}
	if version == 2 {
		c.SandboxImage = "registry.k8s.io/pause:3.6" // containerd 1.6's
	}
	return c
}

// Plugin names of each format's CRI settings.
const (
	criV2        = "io.containerd.grpc.v1.cri"
	criRuntimeV3 = "io.containerd.cri.v1.runtime"
	criImagesV3  = "io.containerd.cri.v1.images"
)

// file is the part of a config file holdfast reads.
type file struct {
	Version *int     `toml:"version"`
	Imports []string `toml:"imports"`
	GRPC    struct {
		Address string `toml:"address"`
	} `toml:"grpc"`
	Plugins map[string]plugin `toml:"plugins"`
}

type plugin struct {
	SandboxImage string            `toml:"sandbox_image"` // v2
	PinnedImages map[string]string `toml:"pinned_images"` // v3 images
	CNI          struct {
		BinDir     string   `toml:"bin_dir"`
		BinDirs    []string `toml:"bin_dirs"`
		ConfDir    string   `toml:"conf_dir"`
		MaxConfNum *int     `toml:"max_conf_num"`
	} `toml:"cni"`
}

// Load reads the config at the on-node path p under root, and the files
// its imports name (in containerd's order: later values win). A missing
// config is containerd's defaults for version 3 with found false.
func Load(root, p string) (c Config, found bool, err error) {
	data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(p)))
	if errors.Is(err, fs.ErrNotExist) {
		return Defaults(3), false, nil
	}
	if err != nil {
		return Config{}, false, err
	}
	main, err := parse(p, data)
	if err != nil {
		return Config{}, false, err
	}
	c = Defaults(main.version())
	if err := main.apply(&c, p); err != nil {
		return Config{}, false, err
	}
	for _, imp := range main.Imports {
		if err := applyImport(&c, root, p, imp); err != nil {
			return Config{}, false, err
		}
	}
	return c, true, nil
}

func applyImport(c *Config, root, p, imp string) error {
	if !path.IsAbs(imp) {
		imp = path.Join(path.Dir(p), imp)
	}
	matches, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(imp)))
	if err != nil {
		return fmt.Errorf("%s: imports %q: %w", p, imp, err)
	}
	sort.Strings(matches)
	for _, m := range matches {
		data, err := os.ReadFile(m)
		if err != nil {
			return fmt.Errorf("%s: import: %w", p, err)
		}
		rel, _ := filepath.Rel(root, m)
		name := "/" + filepath.ToSlash(rel)
		f, err := parse(name, data)
		if err != nil {
			return err
		}
		if err := f.apply(c, name); err != nil {
			return err
		}
	}
	return nil
}

// parse decodes one config file; name is how errors refer to it. It
// refuses what it cannot read faithfully: invalid TOML, version 1 (the
// pre-1.3 plugin names) and unknown versions.
func parse(name string, data []byte) (*file, error) {
	var f file
	if err := decode(data, &f); err != nil {
		return nil, fmt.Errorf("%s: not valid TOML: %w", name, err)
	}
	switch v := f.version(); v {
	case 2, 3:
	case 1:
		return nil, fmt.Errorf("%s: containerd config version 1 (no version line) is not supported: convert it with `containerd config migrate`", name)
	default:
		return nil, fmt.Errorf("%s: unknown containerd config version %d (want 2 or 3)", name, v)
	}
	return &f, nil
}

// decode decodes data into f. go-toml v2.2.4 panics on some malformed
// input (a table where a string map value goes, found by FuzzParse): that
// is an invalid file, not a crash of install.
func decode(data []byte, f *file) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the TOML decoder gave up: %v", r)
		}
	}()
	return toml.NewDecoder(bytes.NewReader(data)).Decode(f)
}

func (f *file) version() int {
	if f.Version == nil {
		return 1
	}
	return *f.Version
}

// apply sets on c what the file sets, reading the plugin names of the
// file's own version (containerd migrates a version 2 file when it loads
// it, so the format decides, not the binary).
func (f *file) apply(c *Config, name string) error {
	if f.GRPC.Address != "" {
		if !path.IsAbs(f.GRPC.Address) {
			return fmt.Errorf("%s: [grpc] address %q is not an absolute socket path", name, f.GRPC.Address)
		}
		c.Address = f.GRPC.Address
	}
	runtime, images := f.Plugins[criV2], f.Plugins[criV2]
	if f.version() == 3 {
		runtime, images = f.Plugins[criRuntimeV3], f.Plugins[criImagesV3]
		if _, old := f.Plugins[criV2]; old {
			if p := f.Plugins[criV2]; p.SandboxImage != "" || p.CNI.ConfDir != "" || p.CNI.BinDir != "" {
				return fmt.Errorf("%s: version 3 config sets CNI or sandbox_image under %q, which containerd 2.x ignores: move them to %q / %q",
					name, criV2, criRuntimeV3, criImagesV3)
			}
		}
	}
	if img := images.SandboxImage; img != "" {
		c.SandboxImage = img
	}
	if img := images.PinnedImages["sandbox"]; img != "" {
		c.SandboxImage = img
	}
	cni := runtime.CNI
	if cni.ConfDir != "" {
		c.CNIConfDir = cni.ConfDir
	}
	switch {
	case len(cni.BinDirs) > 0:
		c.CNIBinDirs = append([]string(nil), cni.BinDirs...)
	case cni.BinDir != "":
		c.CNIBinDirs = []string{cni.BinDir}
	}
	if cni.MaxConfNum != nil {
		c.MaxConfNum = *cni.MaxConfNum
	}
	for _, d := range append([]string{c.CNIConfDir}, c.CNIBinDirs...) {
		if !path.IsAbs(d) {
			return fmt.Errorf("%s: CNI directory %q is not an absolute path", name, d)
		}
	}
	return nil
}
