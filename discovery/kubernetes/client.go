package kubernetes

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// client is a REST client for the three API groups the backend uses
// (discovery.k8s.io/v1 EndpointSlices, authorization.k8s.io/v1 and
// authentication.k8s.io/v1 self reviews), with a scheme of only their
// types. client-go's typed clients import k8s.io/client-go/kubernetes/scheme,
// which registers every built-in API group: 22 MB more in the meshd binary
// (and the whole clientset with the informer factory 29 MB more again).
type client struct {
	rest   *rest.RESTClient
	params runtime.ParameterCodec
}

func newClient(rc *rest.Config) (*client, error) {
	sch := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{discoveryv1.AddToScheme, authorizationv1.AddToScheme, authenticationv1.AddToScheme} {
		if err := add(sch); err != nil {
			return nil, err
		}
	}
	// ListOptions, WatchEvent and Status, as client-go's own scheme has them.
	metav1.AddToGroupVersion(sch, schema.GroupVersion{Version: "v1"})
	metav1.AddToGroupVersion(sch, discoveryv1.SchemeGroupVersion)
	c := rest.CopyConfig(rc)
	c.GroupVersion = &discoveryv1.SchemeGroupVersion
	c.APIPath = "/apis"
	c.NegotiatedSerializer = serializer.NewCodecFactory(sch).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc2, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, err
	}
	return &client{rest: rc2, params: runtime.NewParameterCodec(sch)}, nil
}

// listSlices lists the EndpointSlices of ns ("" = all namespaces).
func (c *client) listSlices(ctx context.Context, ns string, opts metav1.ListOptions) (*discoveryv1.EndpointSliceList, error) {
	var l discoveryv1.EndpointSliceList
	req := c.rest.Get().Namespace(ns).Resource("endpointslices").VersionedParams(&opts, c.params)
	if opts.TimeoutSeconds != nil {
		req = req.Timeout(time.Duration(*opts.TimeoutSeconds) * time.Second)
	}
	if err := req.Do(ctx).Into(&l); err != nil {
		return nil, err
	}
	return &l, nil
}

// watchSlices watches the EndpointSlices of ns ("" = all namespaces).
func (c *client) watchSlices(ctx context.Context, ns string, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	req := c.rest.Get().Namespace(ns).Resource("endpointslices").VersionedParams(&opts, c.params)
	if opts.TimeoutSeconds != nil {
		req = req.Timeout(time.Duration(*opts.TimeoutSeconds) * time.Second)
	}
	return req.Watch(ctx)
}

// accessReview asks whether we may do what review names.
func (c *client) accessReview(ctx context.Context, review *authorizationv1.SelfSubjectAccessReview) (*authorizationv1.SelfSubjectAccessReview, error) {
	review.APIVersion, review.Kind = authorizationv1.SchemeGroupVersion.String(), "SelfSubjectAccessReview"
	var res authorizationv1.SelfSubjectAccessReview
	return &res, c.post(ctx, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review, &res)
}

// selfReview asks who we are.
func (c *client) selfReview(ctx context.Context) (*authenticationv1.SelfSubjectReview, error) {
	review := &authenticationv1.SelfSubjectReview{TypeMeta: metav1.TypeMeta{
		APIVersion: authenticationv1.SchemeGroupVersion.String(), Kind: "SelfSubjectReview"}}
	var res authenticationv1.SelfSubjectReview
	return &res, c.post(ctx, "/apis/authentication.k8s.io/v1/selfsubjectreviews", review, &res)
}

func (c *client) post(ctx context.Context, path string, in any, out runtime.Object) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("kubernetes: encode %T: %w", in, err)
	}
	return c.rest.Post().AbsPath(path).SetHeader("Content-Type", "application/json").Body(body).Do(ctx).Into(out)
}

// version asks the API server's /version (the outage probe).
func (c *client) version(ctx context.Context) error {
	_, err := c.rest.Get().AbsPath("/version").Do(ctx).Raw()
	return err
}
