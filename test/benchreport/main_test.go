package main

import (
	"strings"
	"testing"
)

func TestReportPairsHoldfastWithBaseline(t *testing.T) {
	in := `goos: linux
BenchmarkRestore/holdfast/peers=10-2   	     100	   2000000 ns/op	 3.000 p50-ms
BenchmarkRestore/ipbatch/peers=10-2    	     100	   1000000 ns/op	 2.000 p50-ms
BenchmarkLonely/holdfast-2             	      10	       500 ns/op
BenchmarkRestore/interleaved/peers=10-2  	     100	   9000000 ns/op	 7.000 other-ms
PASS`
	var b strings.Builder
	rows := report(&b, parse(strings.NewReader(in)))
	out := b.String()
	if rows != 3 {
		t.Fatalf("want 3 rows, got %d:\n%s", rows, out)
	}
	if !strings.Contains(out, "2.00x") || !strings.Contains(out, "1.50x") {
		t.Fatalf("ratios missing:\n%s", out)
	}
	if !strings.Contains(out, "BenchmarkLonely/*") || !strings.Contains(out, "(none)") {
		t.Fatalf("unpaired benchmark not reported:\n%s", out)
	}
	if strings.Contains(out, "interleaved") {
		t.Fatalf("a sibling sharing only ns/op was paired as a baseline:\n%s", out)
	}
}

func TestGoalReportMarksEachGoal(t *testing.T) {
	in := `BenchmarkNodeFootprint-2   	       1	 600000000000 ns/op	 12.5 cri-shim-rss-MB	 70.1 holdfast-rss-MB	 0.4 holdfast-cpu-%	 1.01 kubelet-cpu-ratio
BenchmarkBinarySize-2      	       1	 4000000 ns/op	 58.79 holdfastd-MB	 12.0 image-gz-MB
BenchmarkOther-2           	       1	 4000000 ns/op	 3.0 p50-ms`
	var b strings.Builder
	rows := goalReport(&b, parse(strings.NewReader(in)))
	out := b.String()
	if rows != 6 {
		t.Fatalf("want 6 rows, got %d:\n%s", rows, out)
	}
	for _, want := range []string{"holdfast-rss-MB", "cri-shim-rss-MB", "image-gz-MB"} {
		if !strings.Contains(out, want) {
			t.Errorf("%s missing:\n%s", want, out)
		}
	}
	if strings.Count(out, "OVER") != 2 || strings.Count(out, " ok ") != 3 {
		t.Fatalf("want holdfast-rss-MB and holdfastd-MB OVER, three ok:\n%s", out)
	}
	if strings.Contains(out, "p50-ms") {
		t.Fatalf("a benchmark without goal metrics was printed:\n%s", out)
	}
}
