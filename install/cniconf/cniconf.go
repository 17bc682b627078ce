// Package cniconf chains the holdfast CNI plugins into a node's existing CNI
// network configuration. It owns only the rendering of one new conflist from
// the one the container runtime uses today; it never writes files and never
// changes the original configuration (the caller writes the result under a
// name that sorts before the original, so the runtime picks it up instead).
package cniconf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Plugin types holdfast installs.
const (
	IPAMType    = "holdfast-ipam"
	ChainedType = "holdfast"
)

// Extensions are the file extensions libcni (and so containerd and CRI-O)
// load from a CNI conf dir.
var Extensions = []string{".conf", ".conflist", ".json"}

// Options tune the rendered chain.
type Options struct {
	// OverlayDevice is the VXLAN device the chained plugin restores after an
	// offline boot; set for flannel ("flannel.1"), empty for bridge.
	OverlayDevice string
	// PinTTL, if set, is passed to holdfast-ipam as "pinTTL" (e.g. "168h").
	PinTTL string
	// NodeName is passed to the chained plugin's overlay check, so it finds
	// this node's VTEP MAC pin (the plugin's default is the host name).
	NodeName string
	// IPAMDataDir, DataDir and SnapshotDir, if set, are holdfast-ipam's
	// "dataDir", the chained plugin's "dataDir" and its overlay
	// "snapshotDir" (empty: the plugins' /var/lib/holdfast defaults).
	IPAMDataDir, DataDir, SnapshotDir string
}

// FindActive returns the file name (not path) of the conf the runtime uses
// today: the lexically first file with a CNI extension in dir, skipping the
// names in ignore (files holdfast itself wrote). It returns "" if there is
// none.
func FindActive(dir string, ignore map[string]bool) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("read CNI conf dir %s: %w", dir, err)
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() || ignore[e.Name()] {
			continue
		}
		for _, ext := range Extensions {
			if filepath.Ext(e.Name()) == ext {
				names = append(names, e.Name())
			}
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "", nil
	}
	return names[0], nil
}

// NameBefore returns the file name holdfast writes its conflist under: one
// that sorts lexically before active, so the runtime loads it first.
func NameBefore(active string) (string, error) {
	for _, c := range []string{"00-holdfast.conflist", "0-holdfast.conflist", "00-00-holdfast.conflist", "-holdfast.conflist"} {
		if c < active {
			return c, nil
		}
	}
	return "", fmt.Errorf("cannot name a conflist that sorts before %q: rename it or pass an explicit conflist name", active)
}

// Chain renders a conflist that is src (a .conflist, or a single-plugin
// .conf which is wrapped into a list) with the main plugin's host-local IPAM
// switched to holdfast-ipam and the holdfast plugin chained right after the
// main plugin. Every other field is kept as it was. file is used in errors.
// It refuses, naming file and problem, anything it cannot chain safely.
func Chain(file string, src []byte, opts Options) ([]byte, error) {
	fail := func(format string, a ...any) ([]byte, error) {
		return nil, fmt.Errorf("%s: %s", file, fmt.Sprintf(format, a...))
	}
	var top map[string]json.RawMessage
	if err := strictObject(src, &top); err != nil {
		return fail("not a JSON object: %v", err)
	}
	var plugins []map[string]json.RawMessage
	if raw, ok := top["plugins"]; ok {
		if err := json.Unmarshal(raw, &plugins); err != nil {
			return fail("\"plugins\" is not a list of objects: %v", err)
		}
		if len(plugins) == 0 {
			return fail("conflist has no plugins")
		}
	} else {
		// A single-plugin .conf: wrap it.
		if _, ok := top["type"]; !ok {
			return fail("neither a conflist (no \"plugins\") nor a plugin conf (no \"type\")")
		}
		conf := top
		top = map[string]json.RawMessage{}
		for _, k := range []string{"cniVersion", "name"} {
			if v, ok := conf[k]; ok {
				top[k] = v
				delete(conf, k)
			}
		}
		plugins = []map[string]json.RawMessage{conf}
	}
	var name string
	if err := json.Unmarshal(top["name"], &name); err != nil || name == "" {
		return fail("network has no \"name\"")
	}
	var version string
	if v, ok := top["cniVersion"]; ok {
		if err := json.Unmarshal(v, &version); err != nil {
			return fail("\"cniVersion\" is not a string")
		}
	}
	if !supportedVersion(version) {
		return fail("cniVersion %q is not supported by holdfast (0.3.1 to 1.1.0)", version)
	}
	types := make([]string, len(plugins))
	for i, p := range plugins {
		if err := json.Unmarshal(p["type"], &types[i]); err != nil || types[i] == "" {
			return fail("plugin %d has no \"type\"", i)
		}
		if types[i] == ChainedType || types[i] == IPAMType {
			return fail("already chains %s (plugin %d)", types[i], i)
		}
	}
	main := plugins[0]
	switch types[0] {
	case "flannel":
		// The flannel plugin builds its delegate's IPAM from its own
		// top-level "ipam" (it overwrites delegate.ipam), filling in ranges
		// and routes from subnet.env; so that is where the type goes.
		ipam, err := switchIPAM(main["ipam"], true)
		if err != nil {
			return fail("flannel plugin: %v", err)
		}
		main["ipam"] = ipam
		if d, ok := main["delegate"]; ok {
			var del map[string]json.RawMessage
			if err := json.Unmarshal(d, &del); err != nil {
				return fail("flannel plugin: \"delegate\" is not an object: %v", err)
			}
			if _, ok := del["ipam"]; ok {
				return fail("flannel plugin: \"delegate.ipam\" is set, but flannel replaces it with the plugin's own \"ipam\"; remove it")
			}
		}
	default:
		raw, ok := main["ipam"]
		if !ok {
			return fail("main plugin %q has no \"ipam\": holdfast needs host-local IPAM to replace", types[0])
		}
		ipam, err := switchIPAM(raw, false)
		if err != nil {
			return fail("plugin %q: %v", types[0], err)
		}
		main["ipam"] = ipam
	}
	if opts.PinTTL != "" || opts.IPAMDataDir != "" {
		var ipam map[string]json.RawMessage
		_ = json.Unmarshal(main["ipam"], &ipam)
		if opts.PinTTL != "" {
			ipam["pinTTL"] = mustJSON(opts.PinTTL)
		}
		if opts.IPAMDataDir != "" {
			ipam["dataDir"] = mustJSON(opts.IPAMDataDir)
		}
		main["ipam"] = mustJSON(ipam)
	}
	chained := map[string]json.RawMessage{"type": mustJSON(ChainedType), "ipam": gcIPAM(main["ipam"])}
	if opts.DataDir != "" {
		chained["dataDir"] = mustJSON(opts.DataDir)
	}
	if opts.OverlayDevice != "" {
		overlay := map[string]string{"device": opts.OverlayDevice}
		if opts.NodeName != "" {
			overlay["nodeName"] = opts.NodeName
		}
		if opts.SnapshotDir != "" {
			overlay["snapshotDir"] = opts.SnapshotDir
		}
		chained["overlay"] = mustJSON(overlay)
	}
	out := append([]map[string]json.RawMessage{main, chained}, plugins[1:]...)
	top["plugins"] = mustJSON(out)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(top); err != nil {
		return fail("encode: %v", err)
	}
	return buf.Bytes(), nil
}

// Main returns the type of the main (first) plugin of a conf or conflist.
func Main(src []byte) (string, error) {
	var top struct {
		Type    string `json:"type"`
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(src, &top); err != nil {
		return "", err
	}
	if len(top.Plugins) > 0 {
		return top.Plugins[0].Type, nil
	}
	return top.Type, nil
}

// switchIPAM turns a host-local IPAM section into a holdfast-ipam one,
// keeping every other key. An absent section is allowed only where flannel
// supplies the ranges (absentOK).
func switchIPAM(raw json.RawMessage, absentOK bool) (json.RawMessage, error) {
	ipam := map[string]json.RawMessage{}
	if raw != nil {
		if err := json.Unmarshal(raw, &ipam); err != nil || ipam == nil {
			return nil, fmt.Errorf("\"ipam\" is not an object")
		}
	} else if !absentOK {
		return nil, fmt.Errorf("no \"ipam\"")
	}
	typ := "host-local" // flannel's default when the type is absent
	if t, ok := ipam["type"]; ok {
		if err := json.Unmarshal(t, &typ); err != nil {
			return nil, fmt.Errorf("ipam \"type\" is not a string")
		}
	} else if !absentOK {
		return nil, fmt.Errorf("ipam has no \"type\"")
	}
	if typ != "host-local" {
		return nil, fmt.Errorf("ipam type %q is not host-local: holdfast-ipam only replaces host-local", typ)
	}
	// host-local's legacy single-range shorthand becomes a ranges entry, the
	// form holdfast-ipam reads.
	if sub, ok := ipam["subnet"]; ok {
		if _, has := ipam["ranges"]; has {
			return nil, fmt.Errorf("ipam has both \"subnet\" and \"ranges\"")
		}
		r := map[string]json.RawMessage{"subnet": sub}
		for _, k := range []string{"rangeStart", "rangeEnd", "gateway"} {
			if v, ok := ipam[k]; ok {
				r[k] = v
				delete(ipam, k)
			}
		}
		delete(ipam, "subnet")
		ipam["ranges"] = mustJSON([][]map[string]json.RawMessage{{r}})
	}
	ipam["type"] = mustJSON(IPAMType)
	return mustJSON(ipam), nil
}

// gcIPAM is the chained plugin's "ipam": holdfast-ipam and its dataDir,
// so the plugin can forward the runtime's GC to it (the main plugins do not).
func gcIPAM(mainIPAM json.RawMessage) json.RawMessage {
	var ipam map[string]json.RawMessage
	_ = json.Unmarshal(mainIPAM, &ipam)
	out := map[string]json.RawMessage{"type": mustJSON(IPAMType)}
	if d, ok := ipam["dataDir"]; ok {
		out["dataDir"] = d
	}
	return mustJSON(out)
}

func supportedVersion(v string) bool {
	switch v {
	case "0.3.1", "0.4.0", "1.0.0", "1.1.0":
		return true
	}
	return false
}

// strictObject decodes exactly one JSON object with nothing after it.
func strictObject(src []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the JSON object")
	}
	if rest := strings.TrimSpace(string(src[dec.InputOffset():])); rest != "" {
		return fmt.Errorf("trailing data after the JSON object")
	}
	if string(bytes.TrimSpace(src))[0] != '{' {
		return fmt.Errorf("not an object")
	}
	return nil
}

func mustJSON(v any) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err) // only called with values that always encode
	}
	return json.RawMessage(bytes.TrimRight(buf.Bytes(), "\n"))
}
