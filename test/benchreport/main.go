// Command benchreport reads `go test -bench` output on stdin and prints
// every holdfast figure beside its baseline from the same run, with the
// ratio. Convention: a benchmark's name has a path segment "holdfast";
// its baselines are the benchmarks whose name is the same except for that
// segment (e.g. BenchmarkRestore/holdfast/peers=1000 vs
// BenchmarkRestore/ipbatch/peers=1000).
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

type result struct {
	name    string
	metrics map[string]float64 // unit -> value
	units   []string
}

var procSuffix = regexp.MustCompile(`-\d+$`)

func parse(r io.Reader) []result {
	var out []result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		res := result{name: procSuffix.ReplaceAllString(f[0], ""), metrics: map[string]float64{}}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			res.metrics[f[i+1]] = v
			res.units = append(res.units, f[i+1])
		}
		out = append(out, res)
	}
	return out
}

// key replaces segment i of name with "*".
func key(segs []string, i int) string {
	c := append([]string{}, segs...)
	c[i] = "*"
	return strings.Join(c, "/")
}

// comparable reports whether b measures what h measures: when h reports its
// own metrics (p50-ms, qps, ...), b must report at least one of them, so a
// sibling that only shares ns/op (a different experiment) is no baseline.
func comparable(h, b result) bool {
	custom := false
	for _, u := range h.units {
		if u == "ns/op" || u == "B/op" || u == "allocs/op" {
			continue
		}
		custom = true
		if _, ok := b.metrics[u]; ok {
			return true
		}
	}
	return !custom
}

func report(w io.Writer, results []result) int {
	subjects := map[string]result{}
	for _, r := range results {
		segs := strings.Split(r.name, "/")
		for i, s := range segs {
			if s == "holdfast" {
				subjects[key(segs, i)] = r
			}
		}
	}
	baselines := map[string][]result{}
	for _, r := range results {
		segs := strings.Split(r.name, "/")
		for i, s := range segs {
			if s == "holdfast" {
				continue
			}
			if h, ok := subjects[key(segs, i)]; ok && comparable(h, r) {
				baselines[key(segs, i)] = append(baselines[key(segs, i)], r)
			}
		}
	}
	keys := make([]string, 0, len(subjects))
	for k := range subjects {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(w, "%-64s %-10s %14s %14s %8s  %s\n", "benchmark (* = holdfast | baseline)", "metric", "holdfast", "baseline", "ratio", "baseline name")
	rows := 0
	for _, k := range keys {
		h := subjects[k]
		for _, b := range baselines[k] {
			for _, u := range h.units {
				bv, ok := b.metrics[u]
				if !ok || u == "B/op" || u == "allocs/op" {
					continue
				}
				ratio := "-"
				if bv != 0 {
					ratio = fmt.Sprintf("%.2fx", h.metrics[u]/bv)
				}
				fmt.Fprintf(w, "%-64s %-10s %14.4g %14.4g %8s  %s\n", k, u, h.metrics[u], bv, ratio, b.name)
				rows++
			}
		}
		if len(baselines[k]) == 0 {
			for _, u := range h.units {
				fmt.Fprintf(w, "%-64s %-10s %14.4g %14s %8s\n", k, u, h.metrics[u], "(none)", "-")
				rows++
			}
		}
	}
	return rows
}

// goal is an upper bound on a metric that has no baseline benchmark of
// its own (issue 18's footprint goals; a ratio metric carries its baseline
// in itself).
type goal struct {
	unit string
	max  float64
	what string
}

var goals = []goal{
	{"holdfast-rss-MB", 60, "RSS of all holdfast node processes"},
	{"holdfast-cpu-%", 1, "CPU of all holdfast node processes, % of one core, idle"},
	{"kubelet-cpu-ratio", 1.02, "kubelet CPU through the shim / straight to containerd"},
	{"holdfastd-MB", 40, "bin/holdfastd"},
	{"image-gz-MB", 15, "holdfastd image (make image), compressed"},
}

// goalReport prints, for every benchmark that reports a goal metric, each
// of its metrics (per-process figures beside the totals), the goal metrics
// marked ok or OVER.
func goalReport(w io.Writer, results []result) int {
	byUnit := map[string]goal{}
	for _, g := range goals {
		byUnit[g.unit] = g
	}
	rows := 0
	for _, r := range results {
		has := false
		for _, u := range r.units {
			_, ok := byUnit[u]
			has = has || ok
		}
		if !has {
			continue
		}
		if rows == 0 {
			fmt.Fprintf(w, "%-28s %-24s %12s %10s  %s\n", "benchmark", "metric", "value", "goal", "")
		}
		for _, u := range r.units {
			if u == "ns/op" {
				continue
			}
			v := r.metrics[u]
			g, ok := byUnit[u]
			if !ok {
				fmt.Fprintf(w, "%-28s %-24s %12.4g\n", r.name, u, v)
				rows++
				continue
			}
			verdict := "ok"
			if v > g.max {
				verdict = "OVER"
			}
			fmt.Fprintf(w, "%-28s %-24s %12.4g %10s  %s (%s)\n", r.name, u, v, fmt.Sprintf("<= %g", g.max), verdict, g.what)
			rows++
		}
	}
	return rows
}

func main() {
	results := parse(os.Stdin)
	if len(results) == 0 {
		fmt.Fprintln(os.Stderr, "benchreport: no benchmark results on stdin")
		os.Exit(1)
	}
	report(os.Stdout, results)
	var g strings.Builder
	if goalReport(&g, results) > 0 {
		fmt.Fprintf(os.Stdout, "\n=== footprint and size goals (issue 18) ===\n%s", g.String())
	}
}
