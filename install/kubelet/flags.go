package kubelet

import (
	"bytes"
	"fmt"
	"strings"
)

// FlagsVar is the variable kubeadm's flags file sets.
const FlagsVar = "KUBELET_KUBEADM_ARGS"

// flagsFile is a parsed kubeadm flags file: the byte span of the
// KUBELET_KUBEADM_ARGS value inside the file and its tokens.
type flagsFile struct {
	src        []byte
	valStart   int // offset of the value's first byte (inside quotes if quoted)
	valEnd     int
	tokens     []token
	hasArgsVar bool
}

type token struct {
	start, end int // offsets into src
	text       string
}

// parseFlags parses an environment file of KEY=VALUE lines as systemd's
// EnvironmentFile reads kubeadm's flags file. Values may be double or single
// quoted; backslashes and unterminated quotes are refused.
func parseFlags(file string, src []byte) (*flagsFile, error) {
	f := &flagsFile{src: src}
	off := 0
	for n, line := range bytes.SplitAfter(src, []byte("\n")) {
		lineStart := off
		off += len(line)
		body := bytes.TrimRight(line, "\r\n")
		trimmed := bytes.TrimSpace(body)
		if len(trimmed) == 0 || trimmed[0] == '#' || trimmed[0] == ';' {
			continue
		}
		eq := bytes.IndexByte(body, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("%s:%d: not a KEY=VALUE line", file, n+1)
		}
		key := string(bytes.TrimSpace(body[:eq]))
		if !validEnvName(key) {
			return nil, fmt.Errorf("%s:%d: %q is not a variable name", file, n+1, key)
		}
		val := body[eq+1:]
		vStart := lineStart + eq + 1
		vEnd := vStart + len(val)
		if len(val) > 0 && (val[0] == '"' || val[0] == '\'') {
			q := val[0]
			closing := bytes.IndexByte(val[1:], q)
			if closing < 0 {
				return nil, fmt.Errorf("%s:%d: unterminated %c quote", file, n+1, q)
			}
			if rest := bytes.TrimSpace(val[closing+2:]); len(rest) > 0 {
				return nil, fmt.Errorf("%s:%d: text after the closing quote", file, n+1)
			}
			vStart++
			vEnd = vStart + closing
		}
		if bytes.IndexByte(src[vStart:vEnd], '\\') >= 0 {
			return nil, fmt.Errorf("%s:%d: backslash escapes are not supported", file, n+1)
		}
		if key != FlagsVar {
			continue
		}
		if f.hasArgsVar {
			return nil, fmt.Errorf("%s:%d: %s is set twice", file, n+1, FlagsVar)
		}
		f.hasArgsVar = true
		f.valStart, f.valEnd = vStart, vEnd
		i := vStart
		for i < vEnd {
			for i < vEnd && (src[i] == ' ' || src[i] == '\t') {
				i++
			}
			j := i
			for j < vEnd && src[j] != ' ' && src[j] != '\t' {
				j++
			}
			if j > i {
				f.tokens = append(f.tokens, token{i, j, string(src[i:j])})
			}
			i = j
		}
	}
	if !f.hasArgsVar {
		return nil, fmt.Errorf("%s: no %s line", file, FlagsVar)
	}
	return f, nil
}

func validEnvName(s string) bool {
	for i, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}

// find returns the span of the value of --name in the args, or ok=false.
func (f *flagsFile) find(name string) (start, end int, ok bool, err error) {
	for i, t := range f.tokens {
		for _, dash := range []string{"--", "-"} {
			if t.text == dash+name {
				if i+1 >= len(f.tokens) || strings.HasPrefix(f.tokens[i+1].text, "-") {
					return 0, 0, false, fmt.Errorf("flag --%s has no value", name)
				}
				return f.tokens[i+1].start, f.tokens[i+1].end, true, nil
			}
			if strings.HasPrefix(t.text, dash+name+"=") {
				return t.start + len(dash+name+"="), t.end, true, nil
			}
		}
	}
	return 0, 0, false, nil
}

// FlagsSet reports which of the settings' flags the flags file sets.
func FlagsSet(file string, src []byte, settings []Setting) (map[string]bool, error) {
	f, err := parseFlags(file, src)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, s := range settings {
		_, _, ok, err := f.find(s.Flag)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		set[s.Flag] = ok
	}
	return set, nil
}

// EditFlags returns the flags file with each setting's flag given its new
// value. A flag already present is edited in place; an absent one is
// appended to KUBELET_KUBEADM_ARGS only if appendMissing is set (on nodes
// without a kubelet config file), otherwise left to the config file.
func EditFlags(file string, src []byte, settings []Setting, appendMissing bool) ([]byte, error) {
	out := src
	for _, s := range settings {
		f, err := parseFlags(file, out)
		if err != nil {
			return nil, err
		}
		val := strings.Join(s.Value, ",")
		start, end, ok, err := f.find(s.Flag)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		switch {
		case ok:
			out = splice(out, start, end, val)
		case appendMissing:
			cur := string(out[f.valStart:f.valEnd])
			add := "--" + s.Flag + "=" + val
			if strings.TrimSpace(cur) != "" {
				add = " " + add
			}
			if isQuote(out, f.valStart) {
				out = splice(out, f.valEnd, f.valEnd, add)
			} else {
				out = splice(out, f.valStart, f.valEnd, `"`+cur+add+`"`)
			}
		}
	}
	if _, err := parseFlags(file, out); err != nil {
		return nil, fmt.Errorf("%s: edited flags do not parse (holdfast bug): %w", file, err)
	}
	return out, nil
}

func isQuote(src []byte, valStart int) bool {
	return valStart > 0 && (src[valStart-1] == '"' || src[valStart-1] == '\'')
}

func splice(src []byte, start, end int, with string) []byte {
	out := make([]byte, 0, len(src)+len(with))
	out = append(out, src[:start]...)
	out = append(out, with...)
	return append(out, src[end:]...)
}
