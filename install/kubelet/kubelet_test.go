package kubelet

import (
	"strings"
	"testing"
)

var settings = Settings("unix:///run/holdfast/cri.sock", "169.254.20.10")

const head = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"

func TestEditConfigLayouts(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"block sequence and scalar",
			head + "clusterDNS:\n- 10.96.0.10\n- 10.96.0.11\ncontainerRuntimeEndpoint: unix:///run/containerd/containerd.sock\nfailSwapOn: false\n",
			head + "clusterDNS:\n- 169.254.20.10\ncontainerRuntimeEndpoint: unix:///run/holdfast/cri.sock\nfailSwapOn: false\n"},
		{"indented sequence, comments kept",
			head + "# dns\nclusterDNS:   # cloud CoreDNS\n  - 10.96.0.10 # old\ncontainerRuntimeEndpoint: \"unix:///x.sock\" # rt\n",
			head + "# dns\nclusterDNS:   # cloud CoreDNS\n  - 169.254.20.10\ncontainerRuntimeEndpoint: unix:///run/holdfast/cri.sock # rt\n"},
		{"flow sequence",
			head + "clusterDNS: [10.96.0.10, 10.96.0.11]\n",
			head + "clusterDNS: [169.254.20.10]\ncontainerRuntimeEndpoint: unix:///run/holdfast/cri.sock\n"},
		{"absent fields, no final newline",
			head + "failSwapOn: false",
			head + "failSwapOn: false\ncontainerRuntimeEndpoint: unix:///run/holdfast/cri.sock\nclusterDNS:\n- 169.254.20.10\n"},
		{"null values",
			head + "clusterDNS:\ncontainerRuntimeEndpoint:\nfailSwapOn: false\n",
			head + "clusterDNS: [169.254.20.10]\ncontainerRuntimeEndpoint: unix:///run/holdfast/cri.sock\nfailSwapOn: false\n"},
		{"CRLF",
			"apiVersion: kubelet.config.k8s.io/v1beta1\r\nkind: KubeletConfiguration\r\nclusterDNS: [1.1.1.1]\r\ncontainerRuntimeEndpoint: x\r\n",
			"apiVersion: kubelet.config.k8s.io/v1beta1\r\nkind: KubeletConfiguration\r\nclusterDNS: [169.254.20.10]\r\ncontainerRuntimeEndpoint: unix:///run/holdfast/cri.sock\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := EditConfig("config.yaml", []byte(tc.in), settings)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got:\n%q\nwant:\n%q", got, tc.want)
			}
			again, err := EditConfig("config.yaml", got, settings)
			if err != nil || string(again) != string(got) {
				t.Fatalf("second edit not a no-op: %v\n%s", err, again)
			}
		})
	}
}

func TestEditConfigRefuses(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"two documents", head + "---\n" + head, "more than one YAML document"},
		{"not a mapping", "- a\n- b\n", "not a YAML mapping"},
		{"duplicate field", head + "clusterDNS: []\nclusterDNS: []\n", "appears twice"},
		{"no apiVersion", "kind: KubeletConfiguration\n", "unknown KubeletConfiguration apiVersion \"\""},
		{"broken", head + "clusterDNS: [\n", "not valid YAML"},
	} {
		_, err := EditConfig("/var/lib/kubelet/config.yaml", []byte(tc.in), settings)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "/var/lib/kubelet/config.yaml") {
			t.Errorf("%s: err %v, want one naming the file and %q", tc.name, err, tc.want)
		}
	}
}

func TestEditFlags(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		appendMissing  bool
	}{
		{"edit in place, = form", `KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///a.sock --v=2"` + "\n",
			`KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///run/holdfast/cri.sock --v=2"` + "\n", false},
		{"edit in place, space form, list", "KUBELET_KUBEADM_ARGS='--cluster-dns 10.96.0.10,10.96.0.11 --container-runtime-endpoint unix:///a.sock'\n",
			"KUBELET_KUBEADM_ARGS='--cluster-dns 169.254.20.10 --container-runtime-endpoint unix:///run/holdfast/cri.sock'\n", false},
		{"absent and not appended", `KUBELET_KUBEADM_ARGS="--v=2"`, `KUBELET_KUBEADM_ARGS="--v=2"`, false},
		{"appended to empty", "KUBELET_KUBEADM_ARGS=\n", "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///run/holdfast/cri.sock --cluster-dns=169.254.20.10\"\n", true},
		{"appended to empty quotes", "KUBELET_KUBEADM_ARGS=\"\"\n", "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///run/holdfast/cri.sock --cluster-dns=169.254.20.10\"\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := EditFlags("flags.env", []byte(tc.in), settings, tc.appendMissing)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got %q\nwant %q", got, tc.want)
			}
			again, err := EditFlags("flags.env", got, settings, tc.appendMissing)
			if err != nil || string(again) != string(got) {
				t.Fatalf("second edit not a no-op: %v %q", err, again)
			}
		})
	}
	for _, bad := range []string{"KUBELET_KUBEADM_ARGS=\"a\nX=1\n", "garbage\n", "KUBELET_KUBEADM_ARGS=a\nKUBELET_KUBEADM_ARGS=b\n", `KUBELET_KUBEADM_ARGS="--container-runtime-endpoint"`, `KUBELET_KUBEADM_ARGS="a\"b"`} {
		if _, err := EditFlags("flags.env", []byte(bad), settings, true); err == nil || !strings.HasPrefix(err.Error(), "flags.env") {
			t.Errorf("%q: err %v, want one naming the file", bad, err)
		}
	}
}

func FuzzEditConfig(f *testing.F) {
	f.Add([]byte(head + "clusterDNS:\n- 10.96.0.10\ncontainerRuntimeEndpoint: x # c\n"))
	f.Add([]byte(head + "clusterDNS: [a, b]\n"))
	f.Add([]byte(head + "clusterDNS: |\n  x\n"))
	f.Add([]byte(head + "clusterDNS:\n  - a\n  - b:\n     c: d\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := EditConfig("f", in, settings)
		if err != nil {
			return
		}
		// Success means verify() passed; the edit must be stable.
		again, err := EditConfig("f", out, settings)
		if err != nil {
			t.Fatalf("edited config refused: %v\n%q", err, out)
		}
		if string(again) != string(out) {
			t.Fatalf("edit not idempotent:\n%q\n%q", out, again)
		}
	})
}

func FuzzEditFlags(f *testing.F) {
	f.Add([]byte(`KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///a.sock --v=2"`), true)
	f.Add([]byte("# c\nKUBELET_KUBEADM_ARGS=--cluster-dns 1.1.1.1\n"), false)
	f.Fuzz(func(t *testing.T, in []byte, appendMissing bool) {
		out, err := EditFlags("f", in, settings, appendMissing)
		if err != nil {
			return
		}
		again, err := EditFlags("f", out, settings, appendMissing)
		if err != nil || string(again) != string(out) {
			t.Fatalf("edit not idempotent: %v\n%q\n%q", err, out, again)
		}
	})
}
