package volumes_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/holdfast-edge/holdfast/cri-shim/volumes"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

func FuzzParseMountInfo(f *testing.F) {
	f.Add([]byte("100 22 0:50 / /var/lib/kubelet/pods/x/volumes/kubernetes.io~secret/a\\040b rw,nosuid,relatime shared:7 - tmpfs tmpfs rw,size=1024k,mode=755\n"))
	f.Add([]byte("1 2 3 4 5 6 - x\n"))
	f.Add([]byte("\\\\\\0 \\377"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := volumes.ParseMountInfo(data)
		if err != nil {
			return
		}
		for p, mt := range m {
			if mt.Point != p {
				t.Fatalf("mount keyed %q holds %q", p, mt.Point)
			}
			mt.Options() // never panics
		}
	})
}

// FuzzDecode: whatever a capture file holds, Decode refuses it or returns
// one whose every volume restore may write (paths of that pod, checked
// trees, options restore passes on).
func FuzzDecode(f *testing.F) {
	good, _ := statefile.Encode(volumes.FileKind, volumes.FileVersion, &volumes.PodFile{UID: "u1", Pod: "default/p", Volumes: []*volumes.Volume{
		{Ref: volumes.Ref{Kind: volumes.DownwardAPI, Name: "podinfo", Path: "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~downward-api/podinfo"},
			Options: volumes.Options{Data: "size=1024k", Flags: []string{"relatime"}}, Version: "..ts",
			Entries: []volumes.Entry{{Path: ".", Type: volumes.TypeDir, Mode: 0o777}, {Path: "..ts", Type: volumes.TypeDir, Mode: 0o755}, {Path: "..ts/labels", Type: volumes.TypeFile, Mode: 0o644, Data: []byte("a=b")}, {Path: "..data", Type: volumes.TypeSymlink, Target: "..ts"}}},
		{Ref: volumes.Ref{Kind: volumes.Secret, Name: "s", Path: "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/s"}, Sealed: []byte{1, 2, 3}},
		{Ref: volumes.Ref{Kind: volumes.EmptyDir, Name: "m", Path: "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/m"}},
		{Ref: volumes.Ref{Kind: volumes.SubPath, Name: "s/app/0", Path: "/var/lib/kubelet/pods/u1/volume-subpaths/s/app/0"},
			Source: "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/s/..ts/key"},
	}})
	f.Add(good)
	f.Add([]byte(`{"kind":"holdfast.cri.volumes","version":1,"sha256":"","payload":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, err := volumes.Decode(data)
		if err != nil {
			return
		}
		for _, v := range pf.Volumes {
			r, ok := volumes.ParsePath(pf.UID, v.Path)
			if !ok || r != v.Ref {
				t.Fatalf("decoded volume %+v outside its pod %s", v.Ref, pf.UID)
			}
			if (v.Kind == volumes.SubPath) != (v.Source != "") || (v.Source != "" && (!filepath.IsAbs(v.Source) || strings.Contains(v.Source, "/volume-subpaths/"))) {
				t.Fatalf("decoded volume %s with bind source %q", v.ID(), v.Source)
			}
			if v.Entries != nil {
				if err := volumes.CheckEntries(v.Entries); err != nil {
					t.Fatalf("decoded entries fail the check: %v", err)
				}
			}
		}
	})
}
