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

func main() {
	results := parse(os.Stdin)
	if len(results) == 0 {
		fmt.Fprintln(os.Stderr, "benchreport: no benchmark results on stdin")
		os.Exit(1)
	}
	report(os.Stdout, results)
}
