package kubestore

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/meshd/meshd/sentry/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Decisions of the store on API answers (the fake clientset stands in for
// the API server; tests/kubernetes runs two replicas against a real one).

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func newStore(t *testing.T, cs *fake.Clientset, id string) *Store {
	t.Helper()
	s, err := New(Options{Client: cs, Namespace: "meshd-system", Secret: "ca", Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func openCA(t *testing.T, s *Store) *ca.Authority {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "d")
	if err := s.Prepare(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	a, err := ca.Open(ca.Options{DataDir: dir, TrustDomain: td, Leading: s.Leading})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Init(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestFirstReplicaCreatesSecondTakes(t *testing.T) {
	cs := fake.NewClientset()
	a1 := openCA(t, newStore(t, cs, "r1"))
	sec, err := cs.CoreV1().Secrets("meshd-system").Get(context.Background(), "ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sec.Data["ca__0001__issuer.key"]; !ok {
		t.Fatalf("Secret keys %v", sec.Data)
	}
	a2 := openCA(t, newStore(t, cs, "r2"))
	if !a2.ActiveRoot().Equal(a1.ActiveRoot()) {
		t.Fatal("the second replica made its own CA")
	}
}

func TestLostCreateRaceTakesWinner(t *testing.T) {
	cs := fake.NewClientset()
	// r2 prepares while there is no Secret yet, then r1 creates it.
	s2 := newStore(t, cs, "r2")
	dir := filepath.Join(t.TempDir(), "d")
	if err := s2.Prepare(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	a1 := openCA(t, newStore(t, cs, "r1"))
	a2, err := ca.Open(ca.Options{DataDir: dir, TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	if a2.ActiveRoot().Equal(a1.ActiveRoot()) {
		t.Fatal("test setup: the roots already agree")
	}
	if err := s2.Init(context.Background(), a2); err != nil {
		t.Fatal(err)
	}
	if !a2.ActiveRoot().Equal(a1.ActiveRoot()) || len(a2.Bundle().Roots) != 1 {
		t.Fatal("the loser of the create race kept its own CA")
	}
}

func TestPushNeverOverwritesUnseenState(t *testing.T) {
	cs := fake.NewClientset()
	s := newStore(t, cs, "r1")
	a := openCA(t, s)
	// Someone else writes the Secret.
	sec, _ := cs.CoreV1().Secrets("meshd-system").Get(context.Background(), "ca", metav1.GetOptions{})
	sec.ResourceVersion = "999"
	sec.Annotations = map[string]string{"x": "y"}
	if _, err := cs.CoreV1().Secrets("meshd-system").Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.lastPushed = nil // our state "changed"
	s.mu.Unlock()
	if err := s.push(context.Background(), a); err == nil || !strings.Contains(err.Error(), "changed under the leader") {
		t.Fatalf("push over an unseen Secret: %v", err)
	}
}

func TestCheckAccessNamesVerb(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).DeepCopy()
		ra := r.Spec.ResourceAttributes
		r.Status.Allowed = !(ra.Resource == "leases" && ra.Verb == "update")
		return true, r, nil
	})
	err := newStore(t, cs, "r1").CheckAccess(context.Background())
	if err == nil || !strings.Contains(err.Error(), `"update" leases.coordination.k8s.io in namespace meshd-system`) {
		t.Fatalf("CheckAccess = %v", err)
	}
}

func TestBundleConfigMaps(t *testing.T) {
	pod := func(ns, name string, ann map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann}}
	}
	cs := fake.NewClientset(
		pod("shop", "a", map[string]string{"meshd.io/app-id": "a"}),
		pod("dapr", "b", map[string]string{"dapr.io/app-id": "b"}),
		pod("plain", "c", nil),
	)
	s := newStore(t, cs, "r1")
	a := openCA(t, s)
	if err := s.publishBundle(context.Background(), a.Bundle()); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"shop", "dapr"} {
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(context.Background(), DefaultBundleConfigMap, metav1.GetOptions{})
		if err != nil || cm.Data[BundleKey] != string(a.Bundle().PEM) || cm.Annotations[VersionAnnotation] != "1" {
			t.Fatalf("%s: %v %v", ns, cm, err)
		}
	}
	if _, err := cs.CoreV1().ConfigMaps("plain").Get(context.Background(), DefaultBundleConfigMap, metav1.GetOptions{}); err == nil {
		t.Fatal("bundle published to a namespace without meshd pods")
	}
}

func TestNewRejects(t *testing.T) {
	cs := fake.NewClientset()
	for name, o := range map[string]Options{
		"no client":   {Namespace: "n", Secret: "s", Identity: "i"},
		"no secret":   {Client: cs, Namespace: "n", Identity: "i"},
		"no identity": {Client: cs, Namespace: "n", Secret: "s"},
		"bad timings": {Client: cs, Namespace: "n", Secret: "s", Identity: "i", LeaseDuration: time.Second, RenewDeadline: 2 * time.Second},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
