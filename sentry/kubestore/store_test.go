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

// A leader finding a state in the Secret it has not seen (a previous
// leader wrote after it last read) takes it instead of overwriting it.
func TestLeaderTakesUnseenState(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	s := newStore(t, cs, "r1")
	a := openCA(t, s)
	s.leading.Store(true)
	other, err := ca.Open(ca.Options{DataDir: filepath.Join(t.TempDir(), "o"), TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := other.Snapshot()
	sec, _ := cs.CoreV1().Secrets("meshd-system").Get(ctx, "ca", metav1.GetOptions{})
	sec.Data = encode(snap)
	if _, err := cs.CoreV1().Secrets("meshd-system").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.push(ctx, a); err != nil {
		t.Fatal(err)
	}
	if !a.ActiveRoot().Equal(other.ActiveRoot()) {
		t.Fatal("the leader did not take the newer state")
	}
	got, _ := ReadSnapshot(ctx, cs, "meshd-system", "ca")
	if !equal(got, snap) {
		t.Fatal("the leader overwrote a state it had not seen")
	}
}

// A rotation staged in the Secret is taken by the leader alone, removed
// from the Secret, imported, and the new state written back; followers
// ignore the staged keys.
func TestRotationStagedInSecret(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	ls := newStore(t, cs, "r1")
	la := openCA(t, ls)
	fs := newStore(t, cs, "r2")
	fa := openCA(t, fs)
	ls.leading.Store(true)

	m, err := ca.Generate(td, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := StageRotation(ctx, cs, "meshd-system", "ca", m); err != nil {
		t.Fatal(err)
	}
	if err := StageRotation(ctx, cs, "meshd-system", "ca", m); err == nil || !strings.Contains(err.Error(), "already staged") {
		t.Fatalf("second staging: %v", err)
	}
	if err := fs.sync(ctx, fa); err != nil { // a follower with staged keys in the Secret
		t.Fatalf("follower sync: %v", err)
	}
	if err := ls.sync(ctx, la); err != nil {
		t.Fatal(err)
	}
	sec, _ := cs.CoreV1().Secrets("meshd-system").Get(ctx, "ca", metav1.GetOptions{})
	if len(stagedOf(sec)) != 0 {
		t.Fatal("the staged rotation was left in the Secret")
	}
	if err := la.Tick(); err != nil {
		t.Fatal(err)
	}
	if len(la.Bundle().Roots) != 2 || !la.Bundle().Roots[1].Equal(m.Root) {
		t.Fatal("the leader did not import the staged root")
	}
	if err := ls.sync(ctx, la); err != nil {
		t.Fatal(err)
	}
	if err := fs.sync(ctx, fa); err != nil {
		t.Fatal(err)
	}
	if len(fa.Bundle().Roots) != 2 || fa.Bundle().Version != la.Bundle().Version {
		t.Fatalf("the follower has %d roots at version %d", len(fa.Bundle().Roots), fa.Bundle().Version)
	}
	// Garbage staged: refused, removed, nothing imported.
	sec, _ = cs.CoreV1().Secrets("meshd-system").Get(ctx, "ca", metav1.GetOptions{})
	sec.Data[StagedPrefix+"root.pem"] = []byte("junk")
	if _, err := cs.CoreV1().Secrets("meshd-system").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	v := la.Bundle().Version
	if err := ls.sync(ctx, la); err != nil {
		t.Fatal(err)
	}
	_ = la.Tick()
	sec, _ = cs.CoreV1().Secrets("meshd-system").Get(ctx, "ca", metav1.GetOptions{})
	if len(stagedOf(sec)) != 0 || la.Bundle().Version != v {
		t.Fatal("a garbage staged rotation was kept or imported")
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
