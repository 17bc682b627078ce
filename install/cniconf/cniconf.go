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
	"slices"
	"sort"
	"strings"

	"github.com/holdfast-edge/holdfast/internal/cniplugin"
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
	out, err := chain(src, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return out, nil
}

// chain is Chain's steps: parse, switch the main plugin's IPAM where its
// type reads it, add the IPAM options, build the holdfast entry, assemble.
func chain(src []byte, opts Options) ([]byte, error) {
	n, err := parse(src)
	if err != nil {
		return nil, err
	}
	main := n.plugins[0]
	if err := switchMainIPAM(main, n.types[0]); err != nil {
		return nil, err
	}
	main["ipam"] = addIPAMOptions(main["ipam"], opts)
	return n.assemble(chainedEntry(main["ipam"], opts))
}

// network is a parsed conf or conflist.
type network struct {
	// top holds the list's own keys (a wrapped .conf's cniVersion and name).
	top     map[string]json.RawMessage
	plugins []map[string]json.RawMessage
	// types[i] is plugins[i]'s "type".
	types []string
}

// parse reads a conflist, or a single-plugin .conf as a list of one, and
// checks its name, cniVersion and plugin types.
func parse(src []byte) (network, error) {
	var n network
	if err := strictObject(src, &n.top); err != nil {
		return n, fmt.Errorf("not a JSON object: %w", err)
	}
	var err error
	if n.top, n.plugins, err = splitPlugins(n.top); err != nil {
		return n, err
	}
	if err := checkHeader(n.top); err != nil {
		return n, err
	}
	n.types, err = pluginTypes(n.plugins)
	return n, err
}

// splitPlugins returns the list's keys and its plugins, wrapping a
// single-plugin .conf.
func splitPlugins(top map[string]json.RawMessage) (map[string]json.RawMessage, []map[string]json.RawMessage, error) {
	raw, ok := top["plugins"]
	if !ok {
		return wrapConf(top)
	}
	var plugins []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &plugins); err != nil {
		return nil, nil, fmt.Errorf("\"plugins\" is not a list of objects: %w", err)
	}
	if len(plugins) == 0 {
		return nil, nil, fmt.Errorf("conflist has no plugins")
	}
	return top, plugins, nil
}

// wrapConf makes a single-plugin .conf a list of one: its cniVersion and
// name move up to the list.
func wrapConf(conf map[string]json.RawMessage) (map[string]json.RawMessage, []map[string]json.RawMessage, error) {
	if _, ok := conf["type"]; !ok {
		return nil, nil, fmt.Errorf("neither a conflist (no \"plugins\") nor a plugin conf (no \"type\")")
	}
	list := map[string]json.RawMessage{}
	for _, k := range []string{"cniVersion", "name"} {
		if v, ok := conf[k]; ok {
			list[k] = v
			delete(conf, k)
		}
	}
	return list, []map[string]json.RawMessage{conf}, nil
}

// checkHeader checks the network's name and that holdfast serves its
// cniVersion.
func checkHeader(top map[string]json.RawMessage) error {
	var name string
	if err := json.Unmarshal(top["name"], &name); err != nil || name == "" {
		return fmt.Errorf("network has no \"name\"")
	}
	var version string
	if v, ok := top["cniVersion"]; ok {
		if err := json.Unmarshal(v, &version); err != nil {
			return fmt.Errorf("\"cniVersion\" is not a string")
		}
	}
	if !supportedVersion(version) {
		return fmt.Errorf("cniVersion %q is not supported by holdfast (%s)", version, strings.Join(cniplugin.Versions.SupportedVersions(), ", "))
	}
	return nil
}

// pluginTypes returns each plugin's type, refusing a list holdfast is
// already chained into.
func pluginTypes(plugins []map[string]json.RawMessage) ([]string, error) {
	types := make([]string, len(plugins))
	for i, p := range plugins {
		if err := json.Unmarshal(p["type"], &types[i]); err != nil || types[i] == "" {
			return nil, fmt.Errorf("plugin %d has no \"type\"", i)
		}
		if types[i] == ChainedType || types[i] == IPAMType {
			return nil, fmt.Errorf("already chains %s (plugin %d)", types[i], i)
		}
	}
	return types, nil
}

// switchMainIPAM switches the main plugin's host-local IPAM to
// holdfast-ipam in the section its type reads.
func switchMainIPAM(main map[string]json.RawMessage, typ string) error {
	if typ == "flannel" {
		return switchFlannelIPAM(main)
	}
	raw, ok := main["ipam"]
	if !ok {
		return fmt.Errorf("main plugin %q has no \"ipam\": holdfast needs host-local IPAM to replace", typ)
	}
	ipam, err := switchIPAM(raw, false)
	if err != nil {
		return fmt.Errorf("plugin %q: %w", typ, err)
	}
	main["ipam"] = ipam
	return nil
}

// switchFlannelIPAM: the flannel plugin builds its delegate's IPAM from its
// own top-level "ipam" (it overwrites delegate.ipam), filling in ranges and
// routes from subnet.env; so that is where the type goes, and a
// delegate.ipam, which flannel would drop, is refused.
func switchFlannelIPAM(main map[string]json.RawMessage) error {
	ipam, err := switchIPAM(main["ipam"], true)
	if err != nil {
		return fmt.Errorf("flannel plugin: %w", err)
	}
	main["ipam"] = ipam
	d, ok := main["delegate"]
	if !ok {
		return nil
	}
	var del map[string]json.RawMessage
	if err := json.Unmarshal(d, &del); err != nil {
		return fmt.Errorf("flannel plugin: \"delegate\" is not an object: %w", err)
	}
	if _, ok := del["ipam"]; ok {
		return fmt.Errorf("flannel plugin: \"delegate.ipam\" is set, but flannel replaces it with the plugin's own \"ipam\"; remove it")
	}
	return nil
}

// addIPAMOptions sets holdfast-ipam's pinTTL and dataDir, where opts has
// them, in a switched IPAM section.
func addIPAMOptions(raw json.RawMessage, opts Options) json.RawMessage {
	if opts.PinTTL == "" && opts.IPAMDataDir == "" {
		return raw
	}
	var ipam map[string]json.RawMessage
	_ = json.Unmarshal(raw, &ipam) // switchIPAM made it: an object
	setString(ipam, "pinTTL", opts.PinTTL)
	setString(ipam, "dataDir", opts.IPAMDataDir)
	return mustJSON(ipam)
}

// chainedEntry is the holdfast plugin's conf: the IPAM it forwards GC to,
// its dataDir, and the overlay device it restores.
func chainedEntry(mainIPAM json.RawMessage, opts Options) map[string]json.RawMessage {
	chained := map[string]json.RawMessage{"type": mustJSON(ChainedType), "ipam": gcIPAM(mainIPAM)}
	setString(chained, "dataDir", opts.DataDir)
	if opts.OverlayDevice != "" {
		overlay := map[string]json.RawMessage{"device": mustJSON(opts.OverlayDevice)}
		setString(overlay, "nodeName", opts.NodeName)
		setString(overlay, "snapshotDir", opts.SnapshotDir)
		chained["overlay"] = mustJSON(overlay)
	}
	return chained
}

// assemble chains the holdfast entry right after the main plugin and
// encodes the list, indented, with its other keys as they were.
func (n network) assemble(chained map[string]json.RawMessage) ([]byte, error) {
	plugins := append([]map[string]json.RawMessage{n.plugins[0], chained}, n.plugins[1:]...)
	n.top["plugins"] = mustJSON(plugins)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(n.top); err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return buf.Bytes(), nil
}

// setString sets m[key] to the JSON string v, unless v is empty.
func setString(m map[string]json.RawMessage, key, v string) {
	if v != "" {
		m[key] = mustJSON(v)
	}
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

// supportedVersion: the spec versions the plugins serve (internal/cniplugin).
func supportedVersion(v string) bool {
	return slices.Contains(cniplugin.Versions.SupportedVersions(), v)
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
