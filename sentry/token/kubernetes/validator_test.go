package kubernetes

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/token"
)

// These tests pin the validator's decisions on API answers of every shape
// (the fake clientset stands in for the API server here; tests/kubernetes
// proves the same path against a real kube-apiserver).

var t0 = time.Unix(1_900_000_000, 0)

// jwt returns a token-shaped string whose payload carries exp.
func jwt(exp time.Time, salt string) string {
	p := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"exp":%d,"sub":%q}`, exp.Unix(), salt))
	return "eyJhbGciOiJSUzI1NiJ9." + p + ".c2ln"
}

func id(t *testing.T, ns, app string) certs.Identity {
	t.Helper()
	i, err := certs.NewIdentity("cluster.local", ns, app)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

type apiSim struct {
	status    authenticationv1.TokenReviewStatus
	reviewErr error
	getErr    error
	reviews   atomic.Int32
	audiences []string
}

func pod(ns, name, uid, sa string, ann map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid), Annotations: ann},
		Spec:       corev1.PodSpec{ServiceAccountName: sa},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

func goodStatus() authenticationv1.TokenReviewStatus {
	return authenticationv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{"meshd"},
		User: authenticationv1.UserInfo{
			Username: "system:serviceaccount:shop:orders",
			Extra: map[string]authenticationv1.ExtraValue{
				ExtraPodName: {"orders-0"}, ExtraPodUID: {"uid-1"},
			},
		},
	}
}

func newSim(t *testing.T, sim *apiSim, o Options, objs ...runtime.Object) *Validator {
	t.Helper()
	cs := fake.NewClientset(objs...)
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sim.reviews.Add(1)
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		sim.audiences = tr.Spec.Audiences
		if sim.reviewErr != nil {
			return true, nil, sim.reviewErr
		}
		out := tr.DeepCopy()
		out.Status = sim.status
		return true, out, nil
	})
	if sim.getErr != nil {
		cs.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, sim.getErr })
	}
	v, err := New(cs, o)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestValidate(t *testing.T) {
	annotated := func(ann map[string]string) *corev1.Pod { return pod("shop", "orders-0", "uid-1", "orders", ann) }
	own := map[string]string{AnnotationAppID: "orders"}
	forbidden := apierrors.NewForbidden(schema.GroupResource{Group: "authentication.k8s.io", Resource: "tokenreviews"}, "", errors.New("no"))
	podForbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "orders-0", errors.New("no"))
	tok := jwt(t0.Add(time.Hour), "a")
	cases := []struct {
		name   string
		tok    string
		status func(*authenticationv1.TokenReviewStatus)
		pod    *corev1.Pod
		revErr error
		getErr error
		want   certs.Identity
		err    error
		msg    string
	}{
		{name: "own annotation", pod: annotated(own), want: id(t, "shop", "orders")},
		{name: "dapr annotation", pod: annotated(map[string]string{DaprAnnotationAppID: "orders"}), want: id(t, "shop", "orders")},
		{name: "both annotations agree", pod: annotated(map[string]string{AnnotationAppID: "orders", DaprAnnotationAppID: "orders"}), want: id(t, "shop", "orders")},
		{name: "both annotations disagree", pod: annotated(map[string]string{AnnotationAppID: "orders", DaprAnnotationAppID: "payments"}),
			want: id(t, "shop", "orders"), err: token.ErrDenied, msg: "disagree"},
		{name: "no annotation", pod: annotated(map[string]string{"other": "x"}), want: id(t, "shop", "orders"), err: token.ErrDenied, msg: "has no app ID"},
		{name: "empty annotation", pod: annotated(map[string]string{AnnotationAppID: ""}), want: id(t, "shop", "orders"), err: token.ErrDenied, msg: "has no app ID"},
		{name: "annotation not an app ID", pod: annotated(map[string]string{AnnotationAppID: "Orders/../x"}), want: id(t, "shop", "orders"), err: token.ErrDenied, msg: "not a meshd identity"},
		{name: "other app asked", pod: annotated(own), want: id(t, "shop", "payments"), err: token.ErrDenied, msg: `for app "orders" in namespace "shop", not app "payments"`},
		{name: "other namespace asked", pod: annotated(own), want: id(t, "prod", "orders"), err: token.ErrDenied, msg: `not app "orders" in namespace "prod"`},
		{name: "missing", tok: " \n", pod: annotated(own), want: id(t, "shop", "orders"), err: token.ErrMissing},
		{name: "too long", tok: strings.Repeat("a", MaxTokenLength+1), pod: annotated(own), want: id(t, "shop", "orders"), err: token.ErrInvalid, msg: "longer"},
		{name: "not authenticated", status: func(s *authenticationv1.TokenReviewStatus) {
			*s = authenticationv1.TokenReviewStatus{Error: "service account token has expired"}
		}, pod: annotated(own), want: id(t, "shop", "orders"), err: token.ErrInvalid, msg: "has expired"},
		{name: "not authenticated, no reason", status: func(s *authenticationv1.TokenReviewStatus) {
			*s = authenticationv1.TokenReviewStatus{}
		}, pod: annotated(own), want: id(t, "shop", "orders"), err: token.ErrInvalid, msg: "not authenticated"},
		{name: "audience not answered", status: func(s *authenticationv1.TokenReviewStatus) { s.Audiences = []string{"other"} },
			pod: annotated(own), want: id(t, "shop", "orders"), err: token.ErrInvalid, msg: `not for audience "meshd"`},
		{name: "not a service account", status: func(s *authenticationv1.TokenReviewStatus) { s.User.Username = "alice" },
			pod: annotated(own), want: id(t, "shop", "orders"), err: token.ErrInvalid, msg: "not a service account"},
		{name: "malformed service account", status: func(s *authenticationv1.TokenReviewStatus) { s.User.Username = "system:serviceaccount:shop:" },
			pod: annotated(own), want: id(t, "shop", "orders"), err: token.ErrInvalid, msg: "not a service account"},
		{name: "not bound to a pod", status: func(s *authenticationv1.TokenReviewStatus) { s.User.Extra = nil },
			pod: annotated(own), want: id(t, "shop", "orders"), err: token.ErrInvalid, msg: "not bound to a pod"},
		{name: "two pod names", status: func(s *authenticationv1.TokenReviewStatus) { s.User.Extra[ExtraPodName] = []string{"a", "b"} },
			pod: annotated(own), want: id(t, "shop", "orders"), err: token.ErrInvalid, msg: "not bound to a pod"},
		{name: "pod gone", pod: pod("shop", "other", "uid-1", "orders", own), want: id(t, "shop", "orders"), err: token.ErrInvalid, msg: "no longer exists"},
		{name: "pod recreated", pod: pod("shop", "orders-0", "uid-2", "orders", own), want: id(t, "shop", "orders"), err: token.ErrInvalid, msg: "now has uid uid-2"},
		{name: "pod of another service account", pod: pod("shop", "orders-0", "uid-1", "payments", own), want: id(t, "shop", "orders"), err: token.ErrInvalid, msg: `runs as service account "payments"`},
		{name: "pod terminated", pod: func() *corev1.Pod { p := annotated(own); p.Status.Phase = corev1.PodSucceeded; return p }(),
			want: id(t, "shop", "orders"), err: token.ErrInvalid, msg: "terminated"},
		{name: "review forbidden", revErr: forbidden, pod: annotated(own), want: id(t, "shop", "orders"), err: token.ErrUnavailable, msg: `needs "create" tokenreviews.authentication.k8s.io`},
		{name: "review unauthorized", revErr: apierrors.NewUnauthorized("bad"), pod: annotated(own), want: id(t, "shop", "orders"), err: token.ErrUnavailable, msg: "own credentials"},
		{name: "API down", revErr: errors.New("connection refused"), pod: annotated(own), want: id(t, "shop", "orders"), err: token.ErrUnavailable, msg: "connection refused"},
		{name: "pod get forbidden", getErr: podForbidden, pod: annotated(own), want: id(t, "shop", "orders"), err: token.ErrUnavailable, msg: `needs "get" pods in namespace shop`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sim := &apiSim{status: goodStatus(), reviewErr: c.revErr, getErr: c.getErr}
			if c.status != nil {
				c.status(&sim.status)
			}
			v := newSim(t, sim, Options{Now: func() time.Time { return t0 }}, c.pod)
			tk := c.tok
			if tk == "" {
				tk = tok
			}
			err := v.Validate(context.Background(), tk, c.want)
			if c.err == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if fmt.Sprint(sim.audiences) != "[meshd]" {
					t.Fatalf("review asked for audiences %v, want [meshd]", sim.audiences)
				}
				return
			}
			if !errors.Is(err, c.err) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err %q does not say %q", err, c.msg)
			}
		})
	}
}

func TestCache(t *testing.T) {
	now := t0
	clock := func() time.Time { return now }
	p := pod("shop", "orders-0", "uid-1", "orders", map[string]string{AnnotationAppID: "orders"})
	want := id(t, "shop", "orders")
	ctx := context.Background()

	t.Run("off", func(t *testing.T) {
		sim := &apiSim{status: goodStatus()}
		v := newSim(t, sim, Options{Now: clock}, p)
		for range 3 {
			if err := v.Validate(ctx, jwt(t0.Add(time.Hour), "a"), want); err != nil {
				t.Fatal(err)
			}
		}
		if n := sim.reviews.Load(); n != 3 {
			t.Fatalf("%d reviews without a cache, want 3", n)
		}
	})
	t.Run("hit, expiry, denial on hit", func(t *testing.T) {
		now = t0
		sim := &apiSim{status: goodStatus()}
		v := newSim(t, sim, Options{Now: clock, CacheTTL: 10 * time.Second}, p)
		tok := jwt(t0.Add(time.Hour), "a")
		for range 3 {
			if err := v.Validate(ctx, tok, want); err != nil {
				t.Fatal(err)
			}
		}
		if n := sim.reviews.Load(); n != 1 {
			t.Fatalf("%d reviews, want 1 (cached)", n)
		}
		// A cached review still judges the requested identity.
		if err := v.Validate(ctx, tok, id(t, "shop", "payments")); !errors.Is(err, token.ErrDenied) {
			t.Fatalf("cached token for another app: %v, want ErrDenied", err)
		}
		now = t0.Add(10 * time.Second)
		if err := v.Validate(ctx, tok, want); err != nil {
			t.Fatal(err)
		}
		if n := sim.reviews.Load(); n != 2 {
			t.Fatalf("%d reviews after the TTL, want 2", n)
		}
	})
	t.Run("never beyond the token's expiry", func(t *testing.T) {
		now = t0
		sim := &apiSim{status: goodStatus()}
		v := newSim(t, sim, Options{Now: clock, CacheTTL: time.Minute}, p)
		tok := jwt(t0.Add(5*time.Second), "a")
		_ = v.Validate(ctx, tok, want)
		now = t0.Add(5 * time.Second)
		sim.status = authenticationv1.TokenReviewStatus{Error: "token has expired"}
		if err := v.Validate(ctx, tok, want); !errors.Is(err, token.ErrInvalid) {
			t.Fatalf("expired token served from the cache: %v", err)
		}
	})
	t.Run("unknown expiry not cached", func(t *testing.T) {
		sim := &apiSim{status: goodStatus()}
		v := newSim(t, sim, Options{Now: clock, CacheTTL: time.Minute}, p)
		_ = v.Validate(ctx, "opaque-token", want)
		_ = v.Validate(ctx, "opaque-token", want)
		if n := sim.reviews.Load(); n != 2 || v.Len() != 0 {
			t.Fatalf("%d reviews, %d cached; want 2, 0", n, v.Len())
		}
	})
	t.Run("failures not cached", func(t *testing.T) {
		sim := &apiSim{status: authenticationv1.TokenReviewStatus{Error: "nope"}}
		v := newSim(t, sim, Options{Now: clock, CacheTTL: time.Minute}, p)
		_ = v.Validate(ctx, jwt(t0.Add(time.Hour), "a"), want)
		sim.status = goodStatus()
		if err := v.Validate(ctx, jwt(t0.Add(time.Hour), "a"), want); err != nil {
			t.Fatalf("a refusal was cached: %v", err)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		now = t0
		sim := &apiSim{status: goodStatus()}
		v := newSim(t, sim, Options{Now: clock, CacheTTL: time.Minute, CacheSize: 4}, p)
		for i := range 10 {
			if err := v.Validate(ctx, jwt(t0.Add(time.Hour), fmt.Sprint(i)), want); err != nil {
				t.Fatal(err)
			}
		}
		if v.Len() != 4 {
			t.Fatalf("cache holds %d, want its bound 4", v.Len())
		}
	})
}

func TestNewRejects(t *testing.T) {
	cs := fake.NewClientset()
	for _, o := range []Options{{CacheTTL: -time.Second}, {CacheTTL: MaxCacheTTL + time.Second}, {CacheSize: -1}} {
		if _, err := New(cs, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("nil client accepted")
	}
	if _, err := NewFromOptions(context.Background(), Options{Kubeconfig: "/nonexistent/kubeconfig"}); err == nil ||
		!strings.Contains(err.Error(), "/nonexistent/kubeconfig") {
		t.Errorf("missing kubeconfig: %v", err)
	}
}

func TestCheckAccess(t *testing.T) {
	for _, deny := range []string{"tokenreviews", "pods"} {
		t.Run(deny, func(t *testing.T) {
			cs := fake.NewClientset()
			cs.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
				r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).DeepCopy()
				r.Status.Allowed = r.Spec.ResourceAttributes.Resource != deny
				return true, r, nil
			})
			v, _ := New(cs, Options{})
			err := v.CheckAccess(context.Background())
			if err == nil || !strings.Contains(err.Error(), deny) || !strings.Contains(err.Error(), "RBAC") {
				t.Fatalf("CheckAccess = %v, want an RBAC error naming %s", err, deny)
			}
		})
	}
}
