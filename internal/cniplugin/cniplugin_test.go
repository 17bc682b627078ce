package cniplugin

import (
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	p, err := ParseArgs("x", "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u1;;")
	if err != nil || p != (PodArgs{"shop", "web-0", "u1"}) {
		t.Fatalf("got %+v, %v", p, err)
	}
	if _, err := ParseArgs("holdfast", "K8S_POD_NAMEnoequals"); err == nil || !strings.Contains(err.Error(), "holdfast: CNI_ARGS pair") {
		t.Fatalf("bad pair: %v", err)
	}
}
