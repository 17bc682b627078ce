// Package kubelet points kubelet at the holdfast CRI shim and the node DNS
// address. It edits the two places kubeadm-style nodes configure kubelet:
// the KubeletConfiguration YAML (only the edited values change; every other
// byte, field and comment is kept) and the kubeadm flags file
// (KUBELET_KUBEADM_ARGS; flags there override the config file). It only
// renders new file contents; it never writes files or restarts kubelet.
package kubelet

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Known KubeletConfiguration API versions.
const (
	APIVersion = "kubelet.config.k8s.io/v1beta1"
	Kind       = "KubeletConfiguration"
)

// Setting is one value kubelet must get.
type Setting struct {
	// Field is the KubeletConfiguration field (e.g. containerRuntimeEndpoint).
	Field string
	// Flag is the equivalent command-line flag without dashes.
	Flag string
	// Value is a scalar, or a list when List is set.
	Value []string
	List  bool
}

// Settings returns the kubelet settings holdfast needs.
func Settings(criEndpoint, nodeDNS string) []Setting {
	return []Setting{
		{Field: "containerRuntimeEndpoint", Flag: "container-runtime-endpoint", Value: []string{criEndpoint}},
		{Field: "clusterDNS", Flag: "cluster-dns", Value: []string{nodeDNS}, List: true},
	}
}

// EditConfig returns src (a KubeletConfiguration YAML document) with each
// setting applied. Only the lines holding the edited values change; a field
// that is absent is appended at the end. file is used in errors. The result
// is re-parsed and checked: the edited fields hold the new values and every
// other field is unchanged.
func EditConfig(file string, src []byte, settings []Setting) ([]byte, error) {
	if _, err := parseConfig(file, src); err != nil {
		return nil, err
	}
	out := src
	var err error
	for _, s := range settings {
		out, err = setField(out, s)
		if err != nil {
			return nil, fmt.Errorf("%s: set %s: %w", file, s.Field, err)
		}
	}
	if err := verify(file, src, out, settings); err != nil {
		return nil, err
	}
	return out, nil
}

// parseConfig parses and checks a KubeletConfiguration document.
func parseConfig(file string, src []byte) (*yaml.Node, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s: not valid YAML: %v", file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("%s: holds more than one YAML document; expected one KubeletConfiguration", file)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: not a YAML mapping", file)
	}
	m := doc.Content[0]
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := m.Content[i].Value
		if seen[k] {
			return nil, fmt.Errorf("%s: field %q appears twice", file, k)
		}
		seen[k] = true
	}
	av, kind := lookup(m, "apiVersion"), lookup(m, "kind")
	if kind == nil || kind.Value != Kind {
		return nil, fmt.Errorf("%s: kind is %q, want %s", file, value(kind), Kind)
	}
	if av == nil || av.Value != APIVersion {
		return nil, fmt.Errorf("%s: unknown KubeletConfiguration apiVersion %q (holdfast knows %s)", file, value(av), APIVersion)
	}
	return m, nil
}

func value(n *yaml.Node) string {
	if n == nil {
		return ""
	}
	return n.Value
}

func lookup(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func lookupKey(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i]
		}
	}
	return nil
}

// setField applies one setting to src by splicing text at the positions the
// YAML parser reports, so nothing else moves.
func setField(src []byte, s Setting) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	m := doc.Content[0]
	lines := splitLines(src)
	key, val := lookupKey(m, s.Field), lookup(m, s.Field)
	if key == nil {
		// Append at the end as a top-level field.
		var b bytes.Buffer
		b.Write(src)
		if len(src) > 0 && src[len(src)-1] != '\n' {
			b.WriteByte('\n')
		}
		b.WriteString(render(s, ""))
		return b.Bytes(), nil
	}
	if key.Column != 1 {
		return nil, errors.New("top-level mapping is indented; cannot edit in place")
	}
	keyLine := key.Line - 1
	switch {
	case val.Kind == yaml.ScalarNode && val.Line == key.Line && !strings.Contains(val.Value, "\n"),
		val.Kind == yaml.SequenceNode && val.Style&yaml.FlowStyle != 0 && val.Line == key.Line && endLine(val) == val.Line,
		val.Kind == yaml.ScalarNode && val.Tag == "!!null" && val.Line == key.Line:
		// key: value [# comment] on one line.
		if endLine(val) != val.Line {
			return nil, errors.New("value spans lines")
		}
		line := lines[keyLine]
		start := runeOffset(line, val.Column-1)
		if val.Tag == "!!null" && val.Value == "" {
			start = len(bytes.TrimRight(line, "\r\n"))
		}
		newLine := string(line[:start])
		if !strings.HasSuffix(newLine, " ") {
			newLine += " "
		}
		newLine += inline(s)
		if val.LineComment != "" {
			newLine += " " + val.LineComment
		}
		lines[keyLine] = []byte(newLine + lineEnding(line))
		return bytes.Join(lines, nil), nil
	case val.Kind == yaml.SequenceNode && val.Style&yaml.FlowStyle == 0:
		first, last := val.Content[0].Line-1, endLine(val)-1
		if first <= keyLine || last >= len(lines) {
			return nil, errors.New("unexpected sequence layout")
		}
		dash := bytes.IndexByte(lines[first], '-')
		if dash < 0 || strings.TrimSpace(string(lines[first][:dash])) != "" {
			return nil, errors.New("unexpected sequence layout")
		}
		indent := string(lines[first][:dash])
		var items []byte
		for _, v := range s.Value {
			items = append(items, []byte(indent+"- "+quote(v)+"\n")...)
		}
		var out [][]byte
		out = append(out, lines[:first]...)
		out = append(out, items)
		out = append(out, lines[last+1:]...)
		return bytes.Join(out, nil), nil
	}
	return nil, fmt.Errorf("value has a layout holdfast does not edit in place (line %d)", val.Line)
}

// endLine is the last source line of a node.
func endLine(n *yaml.Node) int {
	l := n.Line
	for _, c := range n.Content {
		if e := endLine(c); e > l {
			l = e
		}
	}
	return l
}

func render(s Setting, indent string) string {
	if !s.List {
		return indent + s.Field + ": " + quote(s.Value[0]) + "\n"
	}
	var b strings.Builder
	b.WriteString(indent + s.Field + ":\n")
	for _, v := range s.Value {
		b.WriteString(indent + "- " + quote(v) + "\n")
	}
	return b.String()
}

func inline(s Setting) string {
	if !s.List {
		return quote(s.Value[0])
	}
	q := make([]string, len(s.Value))
	for i, v := range s.Value {
		q[i] = quote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// quote renders a string scalar, quoting only when YAML would read it as
// something else.
func quote(v string) string {
	var n yaml.Node
	n.SetString(v)
	out, err := yaml.Marshal(&n)
	if err != nil {
		return `"` + v + `"`
	}
	return strings.TrimRight(string(out), "\n")
}

func splitLines(src []byte) [][]byte {
	return bytes.SplitAfter(src, []byte("\n"))
}

func lineEnding(line []byte) string {
	if bytes.HasSuffix(line, []byte("\r\n")) {
		return "\r\n"
	}
	if bytes.HasSuffix(line, []byte("\n")) {
		return "\n"
	}
	return ""
}

// runeOffset converts a 0-based rune column into a byte offset.
func runeOffset(line []byte, col int) int {
	off := 0
	for i := 0; i < col && off < len(line); i++ {
		_, size := utf8.DecodeRune(line[off:])
		off += size
	}
	return off
}

// verify re-parses out and checks it against src: settings applied, every
// other top-level field identical.
func verify(file string, src, out []byte, settings []Setting) error {
	var before, after map[string]any
	if err := yaml.Unmarshal(src, &before); err != nil {
		return fmt.Errorf("%s: %v", file, err)
	}
	if err := yaml.Unmarshal(out, &after); err != nil {
		return fmt.Errorf("%s: edited config does not parse (holdfast bug): %v", file, err)
	}
	for _, s := range settings {
		var want any = s.Value[0]
		if s.List {
			l := make([]any, len(s.Value))
			for i, v := range s.Value {
				l[i] = v
			}
			want = l
		}
		if !reflect.DeepEqual(after[s.Field], want) {
			return fmt.Errorf("%s: edited %s is %v, want %v (holdfast bug)", file, s.Field, after[s.Field], want)
		}
		delete(before, s.Field)
		delete(after, s.Field)
	}
	if !reflect.DeepEqual(before, after) {
		return fmt.Errorf("%s: editing changed other fields (holdfast bug)", file)
	}
	return nil
}
