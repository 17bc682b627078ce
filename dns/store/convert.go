package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// FromService converts a core/v1 Service.
func FromService(in *corev1.Service) Service {
	out := Service{Namespace: in.Namespace, Name: in.Name, Type: string(in.Spec.Type), ExternalName: in.Spec.ExternalName}
	if in.Spec.ClusterIP == corev1.ClusterIPNone {
		out.Headless = true
	} else {
		ips := in.Spec.ClusterIPs
		if len(ips) == 0 && in.Spec.ClusterIP != "" {
			ips = []string{in.Spec.ClusterIP}
		}
		out.ClusterIPs = append([]string(nil), ips...)
	}
	for _, p := range in.Spec.Ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = "TCP"
		}
		out.Ports = append(out.Ports, Port{Name: p.Name, Protocol: proto, Port: p.Port})
	}
	return out
}

// FromEndpointSlice converts a discovery/v1 EndpointSlice.
func FromEndpointSlice(in *discoveryv1.EndpointSlice) EndpointSlice {
	out := EndpointSlice{Namespace: in.Namespace, Name: in.Name, Service: in.Labels[discoveryv1.LabelServiceName], AddressType: string(in.AddressType)}
	for _, p := range in.Ports {
		q := Port{Protocol: "TCP"}
		if p.Name != nil {
			q.Name = *p.Name
		}
		if p.Protocol != nil {
			q.Protocol = string(*p.Protocol)
		}
		if p.Port != nil {
			q.Port = *p.Port
		}
		out.Ports = append(out.Ports, q)
	}
	for _, e := range in.Endpoints {
		o := Endpoint{Addresses: append([]string(nil), e.Addresses...), Ready: e.Conditions.Ready, Serving: e.Conditions.Serving, Terminating: e.Conditions.Terminating}
		if e.Hostname != nil {
			o.Hostname = *e.Hostname
		}
		if e.NodeName != nil {
			o.NodeName = *e.NodeName
		}
		if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
			o.TargetName = e.TargetRef.Name
		}
		out.Endpoints = append(out.Endpoints, o)
	}
	return out
}

// MaxSeedSize bounds a seed file.
const MaxSeedSize = 64 << 20

// LoadSeed reads a `kubectl get services,endpointslices -A -o json` List (or
// a ServiceList/EndpointSliceList, or a single object; Namespaces, as from
// `kubectl get namespaces,services,endpointslices -A -o json`, are taken too). Items of another kind,
// or a Service/EndpointSlice without namespace or name, are refused with an
// error naming the item; nothing is returned then.
func LoadSeed(path string) (*Snapshot, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("seed file: %w", err)
	}
	if st.Size() > MaxSeedSize {
		return nil, fmt.Errorf("seed file %s: %d bytes is larger than the %d byte limit", path, st.Size(), MaxSeedSize)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seed file: %w", err)
	}
	snap, err := ParseSeed(data)
	if err != nil {
		return nil, fmt.Errorf("seed file %s: %w", path, err)
	}
	snap.Source = "seed:" + path
	sort.Strings(snap.Namespaces)
	return snap, nil
}

type typeMeta struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Items      []json.RawMessage `json:"items"`
}

// ParseSeed parses the content of a seed file.
func ParseSeed(data []byte) (*Snapshot, error) {
	var top typeMeta
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("not a JSON Kubernetes object or List: %w", err)
	}
	items := []json.RawMessage{data}
	switch top.Kind {
	case "List", "ServiceList", "EndpointSliceList", "NamespaceList":
		items = top.Items
	case "":
		return nil, fmt.Errorf("no kind: want a List of Services and EndpointSlices")
	}
	snap := &Snapshot{UpdatedAt: time.Now().UTC(), Services: []Service{}, Slices: []EndpointSlice{}}
	seen := map[string]bool{}
	for i, raw := range items {
		var tm typeMeta
		if err := json.Unmarshal(raw, &tm); err != nil {
			return nil, fmt.Errorf("item %d: %w", i, err)
		}
		kind := tm.Kind
		if kind == "" && top.Kind == "ServiceList" {
			kind = "Service"
		}
		if kind == "" && top.Kind == "EndpointSliceList" {
			kind = "EndpointSlice"
		}
		if kind == "" && top.Kind == "NamespaceList" {
			kind = "Namespace"
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		switch kind {
		case "Service":
			var svc corev1.Service
			if err := dec.Decode(&svc); err != nil {
				return nil, fmt.Errorf("item %d (Service): %w", i, err)
			}
			if svc.Namespace == "" || svc.Name == "" {
				return nil, fmt.Errorf("item %d (Service): metadata.namespace and metadata.name are required", i)
			}
			if seen["svc/"+svc.Namespace+"/"+svc.Name] {
				return nil, fmt.Errorf("item %d: Service %s/%s appears twice", i, svc.Namespace, svc.Name)
			}
			seen["svc/"+svc.Namespace+"/"+svc.Name] = true
			snap.Services = append(snap.Services, FromService(&svc))
		case "EndpointSlice":
			var sl discoveryv1.EndpointSlice
			if err := dec.Decode(&sl); err != nil {
				return nil, fmt.Errorf("item %d (EndpointSlice): %w", i, err)
			}
			if sl.Namespace == "" || sl.Name == "" {
				return nil, fmt.Errorf("item %d (EndpointSlice): metadata.namespace and metadata.name are required", i)
			}
			if seen["eps/"+sl.Namespace+"/"+sl.Name] {
				return nil, fmt.Errorf("item %d: EndpointSlice %s/%s appears twice", i, sl.Namespace, sl.Name)
			}
			seen["eps/"+sl.Namespace+"/"+sl.Name] = true
			snap.Slices = append(snap.Slices, FromEndpointSlice(&sl))
		case "Namespace":
			var ns corev1.Namespace
			if err := dec.Decode(&ns); err != nil {
				return nil, fmt.Errorf("item %d (Namespace): %w", i, err)
			}
			if ns.Name == "" || seen["ns/"+ns.Name] {
				return nil, fmt.Errorf("item %d (Namespace): metadata.name missing or repeated", i)
			}
			seen["ns/"+ns.Name] = true
			snap.Namespaces = append(snap.Namespaces, ns.Name)
		default:
			return nil, fmt.Errorf("item %d: kind %q is not Service, EndpointSlice or Namespace", i, kind)
		}
	}
	sort.Strings(snap.Namespaces)
	return snap, nil
}
