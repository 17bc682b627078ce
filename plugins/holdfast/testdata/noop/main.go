// Command noop is a chained CNI plugin that does nothing: ADD prints the
// prevResult back, VERSION the spec versions, every other verb nothing.
// BenchmarkCNIAddDel runs it in place of holdfast (its "floor" chain) to
// show what one more Go exec in the chain costs before any work is done.
package main

import (
	"encoding/json"
	"io"
	"os"
)

func main() {
	stdin, err := io.ReadAll(os.Stdin)
	if err != nil {
		os.Exit(1)
	}
	switch os.Getenv("CNI_COMMAND") {
	case "ADD":
		var conf struct {
			PrevResult json.RawMessage `json:"prevResult"`
		}
		if err := json.Unmarshal(stdin, &conf); err != nil || len(conf.PrevResult) == 0 {
			os.Stdout.WriteString(`{"code":7,"msg":"noop: no prevResult"}`)
			os.Exit(1)
		}
		os.Stdout.Write(conf.PrevResult)
	case "VERSION":
		os.Stdout.WriteString(`{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}`)
	}
}
