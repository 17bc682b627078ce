package kubeclient

import (
	"context"
	"errors"
	"fmt"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/gentype"
	"k8s.io/client-go/rest"
)

// Scheme holds the only API types holdfast reads or writes: core/v1
// (Nodes, Pods, Namespaces, Services, Events), coordination/v1 (Leases)
// and discovery/v1 (EndpointSlices). client-go's clientset registers every
// API group in its scheme, which links all their types into holdfastd
// (docs/footprint.md); this scheme keeps the binary to these three.
var Scheme = runtime.NewScheme()

var codecs = serializer.NewCodecFactory(Scheme)
var parameterCodec = runtime.NewParameterCodec(Scheme)

func init() {
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, coordv1.AddToScheme, discoveryv1.AddToScheme} {
		if err := add(Scheme); err != nil {
			panic(err) // only a programming error: a type registered twice
		}
	}
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
}

// Resource is the typed client of one resource (in one namespace, or
// cluster-scoped): the calls holdfast makes. client-go's typed clients
// (and their fakes) have the same methods.
type Resource[T runtime.Object, L runtime.Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error)
	Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// Interface is holdfast's apiserver client: the resources its components
// use, and a reachability probe.
type Interface interface {
	Nodes() Resource[*corev1.Node, *corev1.NodeList]
	Pods(namespace string) Resource[*corev1.Pod, *corev1.PodList]
	Namespaces() Resource[*corev1.Namespace, *corev1.NamespaceList]
	Services(namespace string) Resource[*corev1.Service, *corev1.ServiceList]
	Events(namespace string) Resource[*corev1.Event, *corev1.EventList]
	Leases(namespace string) Resource[*coordv1.Lease, *coordv1.LeaseList]
	EndpointSlices(namespace string) Resource[*discoveryv1.EndpointSlice, *discoveryv1.EndpointSliceList]
	// Reachable asks the apiserver's /version; ErrNotProbed when the
	// client cannot ask (a test's fake).
	Reachable(ctx context.Context) error
}

// ErrNotProbed is Reachable's answer from a client that has no apiserver
// to ask.
var ErrNotProbed = errors.New("client cannot probe the apiserver")

// Client is an Interface for path (see Config).
func Client(path, userAgent string) (Interface, error) {
	cfg, err := Config(path, userAgent)
	if err != nil {
		return nil, err
	}
	c, err := ForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %q: client: %w", path, err)
	}
	return c, nil
}

// client talks protobuf to the three API groups over one HTTP client.
type client struct {
	core, coordination, discovery rest.Interface
}

// ForConfig builds the Interface for a rest config.
func ForConfig(cfg *rest.Config) (Interface, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	group := func(api string, gv schema.GroupVersion) (rest.Interface, error) {
		c := rest.CopyConfig(cfg)
		c.APIPath, c.GroupVersion = api, &gv
		c.NegotiatedSerializer = codecs.WithoutConversion()
		return rest.RESTClientForConfigAndClient(c, hc)
	}
	var cl client
	if cl.core, err = group("/api", corev1.SchemeGroupVersion); err != nil {
		return nil, err
	}
	if cl.coordination, err = group("/apis", coordv1.SchemeGroupVersion); err != nil {
		return nil, err
	}
	if cl.discovery, err = group("/apis", discoveryv1.SchemeGroupVersion); err != nil {
		return nil, err
	}
	return &cl, nil
}

func resource[T interface {
	runtime.Object
	metav1.Object
}, L runtime.Object](rc rest.Interface, name, namespace string, obj func() T, list func() L) Resource[T, L] {
	return gentype.NewClientWithList(name, rc, parameterCodec, namespace, obj, list, gentype.PrefersProtobuf[T]())
}

func (c *client) Nodes() Resource[*corev1.Node, *corev1.NodeList] {
	return resource(c.core, "nodes", "", func() *corev1.Node { return &corev1.Node{} }, func() *corev1.NodeList { return &corev1.NodeList{} })
}

func (c *client) Pods(ns string) Resource[*corev1.Pod, *corev1.PodList] {
	return resource(c.core, "pods", ns, func() *corev1.Pod { return &corev1.Pod{} }, func() *corev1.PodList { return &corev1.PodList{} })
}

func (c *client) Namespaces() Resource[*corev1.Namespace, *corev1.NamespaceList] {
	return resource(c.core, "namespaces", "", func() *corev1.Namespace { return &corev1.Namespace{} }, func() *corev1.NamespaceList { return &corev1.NamespaceList{} })
}

func (c *client) Services(ns string) Resource[*corev1.Service, *corev1.ServiceList] {
	return resource(c.core, "services", ns, func() *corev1.Service { return &corev1.Service{} }, func() *corev1.ServiceList { return &corev1.ServiceList{} })
}

func (c *client) Events(ns string) Resource[*corev1.Event, *corev1.EventList] {
	return resource(c.core, "events", ns, func() *corev1.Event { return &corev1.Event{} }, func() *corev1.EventList { return &corev1.EventList{} })
}

func (c *client) Leases(ns string) Resource[*coordv1.Lease, *coordv1.LeaseList] {
	return resource(c.coordination, "leases", ns, func() *coordv1.Lease { return &coordv1.Lease{} }, func() *coordv1.LeaseList { return &coordv1.LeaseList{} })
}

func (c *client) EndpointSlices(ns string) Resource[*discoveryv1.EndpointSlice, *discoveryv1.EndpointSliceList] {
	return resource(c.discovery, "endpointslices", ns, func() *discoveryv1.EndpointSlice { return &discoveryv1.EndpointSlice{} }, func() *discoveryv1.EndpointSliceList { return &discoveryv1.EndpointSliceList{} })
}

func (c *client) Reachable(ctx context.Context) error {
	return c.core.Get().AbsPath("/version").Do(ctx).Error()
}
