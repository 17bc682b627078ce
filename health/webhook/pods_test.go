package webhook

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/client-go/tools/record"
)

func pod(annotations, tolerations string) string {
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","namespace":"shop"%s},"spec":{"containers":[{"name":"c","image":"x"}]%s}}`, annotations, tolerations)
}

const (
	optOut    = `,"annotations":{"holdfast.dev/autonomy":"false"}`
	defaults  = `,"tolerations":[{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300},{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}]`
	shortUnr  = `,"tolerations":[{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300},{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":30}]`
	forever   = `,"tolerations":[{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute"},{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute"}]`
	onlyUnr   = `,"tolerations":[{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":30}]`
	everyting = `,"tolerations":[{"operator":"Exists"}]`
	hasOwn    = `,"tolerations":[{"key":"holdfast.dev/retained","operator":"Exists","effect":"NoExecute","tolerationSeconds":5}]`
)

// TestPodPatch: every pod gets its toleration of holdfast.dev/retained at
// creation — forever when it keeps autonomy, for its own controller
// toleration when it opted out.
func TestPodPatch(t *testing.T) {
	for _, c := range []struct {
		name, ann, tol string
		want           string // the holdfast toleration's tolerationSeconds: "forever", a number, or "none"
		count          int    // tolerations after the patch
	}{
		{"keeps autonomy, defaults", "", defaults, "forever", 3},
		{"keeps autonomy, no tolerations (field added)", "", "", "forever", 1},
		{"keeps autonomy, empty list", "", `,"tolerations":[]`, "forever", 1},
		{"opted out, defaults 300 s", optOut, defaults, "300", 3},
		{"opted out, shorter unreachable toleration wins", optOut, shortUnr, "30", 3},
		{"opted out, tolerates forever", optOut, forever, "forever", 3},
		{"opted out, not-ready not tolerated: none (evicted at once, as stock)", optOut, onlyUnr, "none", 1},
		{"opted out, no tolerations: none", optOut, "", "none", 0},
		{"tolerates every taint already", "", everyting, "none", 1},
		{"opted out, tolerates every taint", optOut, everyting, "none", 1},
		{"has its own holdfast toleration", "", hasOwn, "5", 1},
		{"annotation other than false keeps autonomy", `,"annotations":{"holdfast.dev/autonomy":"true"}`, defaults, "forever", 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			doc, _ := apply(t, mutator(Verdicts, Retain), review("Pod", "", pod(c.ann, c.tol)))
			tols, _ := get(doc, "spec.tolerations").([]any)
			if len(tols) != c.count {
				t.Fatalf("%d tolerations, want %d: %v", len(tols), c.count, tols)
			}
			got := "none"
			for _, tl := range tols {
				if get(tl, "key") == RetainedTaint {
					if get(tl, "operator") != "Exists" || get(tl, "effect") != "NoExecute" {
						t.Fatalf("toleration %v", tl)
					}
					got = "forever"
					if s := get(tl, "tolerationSeconds"); s != nil {
						got = fmt.Sprint(s)
					}
				}
			}
			if got != c.want {
				t.Fatalf("holdfast toleration %s, want %s", got, c.want)
			}
			if get(doc, "spec.containers.0.name") != "c" {
				t.Fatal("containers changed")
			}
		})
	}
}

// Opted-out pods' endpoints follow Kubernetes on a kept node.
func TestOptOutEndpoints(t *testing.T) {
	m := mutator(Verdicts, Retain)
	ref := func(name string) string { return `,"targetRef":{"kind":"Pod","name":"` + name + `"}` }
	doc, _ := apply(t, m, review("EndpointSlice", "discovery.k8s.io", slice(`[
	  {"addresses":["10.244.1.5"],"conditions":{"ready":false},"nodeName":"alive"`+ref("web-in")+`},
	  {"addresses":["10.244.1.6"],"conditions":{"ready":false},"nodeName":"alive"`+ref("web-out")+`}]`)))
	if get(doc, "endpoints.0.conditions.ready") != true || get(doc, "endpoints.1.conditions.ready") != false {
		t.Fatalf("slice after patch: %v", get(doc, "endpoints"))
	}
	doc, _ = apply(t, m, review("Endpoints", "", endpoints(`[{"notReadyAddresses":[
	  {"ip":"10.244.1.5","nodeName":"alive","targetRef":{"kind":"Pod","namespace":"shop","name":"web-in"}},
	  {"ip":"10.244.1.6","nodeName":"alive","targetRef":{"kind":"Pod","namespace":"shop","name":"web-out"}}]}]`)))
	if get(doc, "subsets.0.addresses.0.ip") != "10.244.1.5" || get(doc, "subsets.0.notReadyAddresses.0.ip") != "10.244.1.6" {
		t.Fatalf("endpoints after patch: %v", get(doc, "subsets"))
	}
}

func oldNode(name, taints string) string {
	return strings.Replace(review("Node", "", node(name, "Unknown", taints)), `"object":`, `"oldObject":`+node(name, "Unknown", "")+`,"object":`, 1)
}

// TestTaintEvents: the controller retries its taint every monitor period;
// the Node gets one event per outage and decision, none for a dry run,
// none for an update that adds no controller taint.
func TestTaintEvents(t *testing.T) {
	rec := record.NewFakeRecorder(20)
	m := mutator(Verdicts, Retain)
	m.Events = rec
	counts := map[string]int{}
	m.Observe = func(object string, r Reason) { counts[object+"/"+string(r)]++ }
	for i := 0; i < 3; i++ {
		apply(t, m, oldNode("alive", taintsOnlyNoExec))
		apply(t, m, oldNode("dead", taintsOnlyNoExec))
	}
	dry := strings.Replace(oldNode("expired", taintsOnlyNoExec), `"operation":"UPDATE"`, `"operation":"UPDATE","dryRun":true`, 1)
	apply(t, m, dry)
	apply(t, m, review("Node", "", node("within", "Unknown", `,"taints":[{"key":"dedicated","effect":"NoExecute"}]`)))
	// An update of a node that already carries the taint adds none.
	already := strings.Replace(review("Node", "", node("noquorum", "Unknown", taintsOnlyNoExec)), `"object":`, `"oldObject":`+node("noquorum", "Unknown", taintsOnlyNoExec)+`,"object":`, 1)
	if _, ops := apply(t, m, already); len(ops) != 1 {
		t.Fatalf("kept node's standing taints not dropped: %v", ops)
	}
	close(rec.Events)
	var got []string
	for e := range rec.Events {
		got = append(got, e)
	}
	want := []string{
		"Normal NoExecuteTaintDropped dropped node.kubernetes.io/not-ready:NoExecute, node.kubernetes.io/unreachable:NoExecute (VotedAlive): pods kept: alive by 3 of 3 peers, views 3 s old",
		"Warning NoExecuteTaintAllowed let node.kubernetes.io/not-ready:NoExecute, node.kubernetes.io/unreachable:NoExecute through (VotedDead): normal Kubernetes: dead by 2 of 3 peers, views 4 s old",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if counts["Node/VotedAlive"] != 3 || counts["Node/VotedDead"] != 3 || counts["Node/DurationExpired"] != 1 || len(counts) != 3 {
		t.Fatalf("decision counts %v", counts)
	}
}
