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
