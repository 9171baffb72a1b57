// Package helm_test proves meshd's Helm chart (deploy/helm/meshd): helm
// lint's rules pass (Helm's Go library), every object it renders is
// accepted by a real kube-apiserver v1.37.2 with a server-side apply, the
// RBAC it grants is what sentry checks for at start (asked of the real API
// server as sentry's service account), its webhook matches the injector's
// own, and deploy/kubernetes/meshd.yaml is the chart rendered.
package helm_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/meshd/meshd/internal/helmchart"
	kubecp "github.com/meshd/meshd/kube/controlplane"
	"github.com/meshd/meshd/kube/injector"
	"github.com/meshd/meshd/sentry/kubestore"
	kubetoken "github.com/meshd/meshd/sentry/token/kubernetes"
	"github.com/meshd/meshd/tests/harness"
)

const ns = "meshd-system"

func chartDir() string { return filepath.Join(harness.RepoRoot(), "deploy", "helm", "meshd") }

func TestChartLint(t *testing.T) {
	for _, m := range helmchart.Lint(chartDir(), ns, nil) {
		t.Errorf("helm lint: %s", m)
	}
}

// TestPlainManifestsUpToDate: deploy/kubernetes/meshd.yaml is what `make
// manifests` writes from the chart now.
func TestPlainManifestsUpToDate(t *testing.T) {
	out := filepath.Join(t.TempDir(), "meshd.yaml")
	cmd := exec.Command("go", "run", "./internal/helmchart/render", chartDir(), out)
	cmd.Dir = harness.RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("render: %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "deploy", "kubernetes", "meshd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(have) != string(want) {
		t.Error("deploy/kubernetes/meshd.yaml is not the chart rendered: run make manifests")
	}
}

func render(t *testing.T, values map[string]any) []map[string]any {
	t.Helper()
	docs, err := helmchart.Render(chartDir(), helmchart.Release{Name: "meshd", Namespace: ns}, values)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := helmchart.Objects(docs)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]map[string]any, len(objs))
	for i, o := range objs {
		out[i] = o.Object
	}
	return out
}

func TestChartAppliedToRealAPIServer(t *testing.T) {
	k := harness.StartKube(t)
	cs := k.Client()
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := k.RestConfig()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))

	objs, err := helmchart.Objects(mustRender(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s %s: %v", gvk, o.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			if o.GetNamespace() != ns {
				t.Errorf("%s %s: namespace %q, want the release's %s", gvk.Kind, o.GetName(), o.GetNamespace(), ns)
			}
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		b, err := json.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		// Server-side apply, no dry run: the API server validates and stores it.
		got, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, b, metav1.PatchOptions{FieldManager: "helm-test", Force: ptr(true)})
		if err != nil {
			t.Errorf("apply %s %s: %v", gvk.Kind, o.GetName(), err)
			continue
		}
		if got.GetUID() == "" {
			t.Errorf("apply %s %s: stored without a UID", gvk.Kind, o.GetName())
		}
		kinds[gvk.Kind]++
	}
	for kind, n := range map[string]int{"ServiceAccount": 2, "ClusterRole": 3, "ClusterRoleBinding": 3, "Role": 2, "RoleBinding": 2,
		"Service": 2, "ConfigMap": 1, "Deployment": 2, "PodDisruptionBudget": 2, "MutatingWebhookConfiguration": 1} {
		if kinds[kind] != n {
			t.Errorf("%d %s applied, want %d (all: %v)", kinds[kind], kind, n, kinds)
		}
	}

	// sentry's start-up RBAC checks pass as its service account.
	sentry := impersonate(t, cfg, "system:serviceaccount:"+ns+":meshd-sentry")
	v, err := kubetoken.New(sentry, kubetoken.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.CheckAccess(ctx); err != nil {
		t.Errorf("sentry's token validator as meshd-sentry: %v", err)
	}
	st, err := kubestore.New(kubestore.Options{Client: sentry, Namespace: ns, Secret: "meshd-sentry-ca", Identity: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CheckAccess(ctx); err != nil {
		t.Errorf("sentry's CA store as meshd-sentry: %v", err)
	}
	// Least privilege: sentry cannot read other Secrets of other namespaces.
	if _, err := sentry.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{}); err == nil {
		t.Error("meshd-sentry may list Secrets in default")
	}
	cp := impersonate(t, cfg, "system:serviceaccount:"+ns+":meshd-controlplane")
	if _, err := cp.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); err == nil {
		t.Error("meshd-controlplane may list Secrets")
	}
	if _, err := cp.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "meshd-injector", metav1.GetOptions{}); err != nil {
		t.Errorf("meshd-controlplane cannot read its webhook: %v", err)
	}
	if _, err := cp.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{}); err == nil {
		t.Error("meshd-controlplane may list every webhook")
	}
	// Its leader election Lease: get, create, update in its namespace only.
	holder := "r1"
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: kubecp.LeaseName, Namespace: ns}, Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder}}
	if lease, err = cp.CoordinationV1().Leases(ns).Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		t.Errorf("meshd-controlplane cannot create its Lease: %v", err)
	} else {
		r2 := "r2"
		lease.Spec.HolderIdentity = &r2
		if _, err := cp.CoordinationV1().Leases(ns).Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
			t.Errorf("meshd-controlplane cannot update its Lease: %v", err)
		}
		if _, err := cp.CoordinationV1().Leases(ns).Get(ctx, kubecp.LeaseName, metav1.GetOptions{}); err != nil {
			t.Errorf("meshd-controlplane cannot read its Lease: %v", err)
		}
	}
	if _, err := cp.CoordinationV1().Leases("default").Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "default"}}, metav1.CreateOptions{}); err == nil {
		t.Error("meshd-controlplane may create Leases in default")
	}
}

func impersonate(t *testing.T, cfg *rest.Config, user string) kubernetes.Interface {
	t.Helper()
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:serviceaccounts", "system:authenticated"}}
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func mustRender(t *testing.T, values map[string]any) []string {
	t.Helper()
	docs, err := helmchart.Render(chartDir(), helmchart.Release{Name: "meshd", Namespace: ns}, values)
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

// TestChartWebhookIsTheInjectors: the chart's webhook is the one package
// injector describes (less the caBundle the control plane writes), and
// the values reach it.
func TestChartWebhookIsTheInjectors(t *testing.T) {
	find := func(values map[string]any) *admissionregistrationv1.MutatingWebhookConfiguration {
		for _, o := range render(t, values) {
			if o["kind"] == "MutatingWebhookConfiguration" {
				var w admissionregistrationv1.MutatingWebhookConfiguration
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o, &w); err != nil {
					t.Fatal(err)
				}
				return &w
			}
		}
		t.Fatal("no MutatingWebhookConfiguration rendered")
		return nil
	}
	got := find(nil)
	want := injector.WebhookConfiguration(injector.Webhook{Name: "meshd-injector", ServiceNamespace: ns, ServiceName: "meshd-controlplane",
		ServicePort: 443, ExcludeNamespaces: []string{ns}})
	got.Labels = nil
	if !equality.Semantic.DeepEqual(got.Webhooks, want.Webhooks) {
		g, _ := json.MarshalIndent(got.Webhooks, "", " ")
		w, _ := json.MarshalIndent(want.Webhooks, "", " ")
		t.Errorf("chart webhook differs from injector.WebhookConfiguration:\nchart    %s\ninjector %s", g, w)
	}
	got = find(map[string]any{"injector": map[string]any{"failurePolicy": "Ignore", "excludeNamespaces": []any{"legacy"}}})
	if *got.Webhooks[0].FailurePolicy != admissionregistrationv1.Ignore ||
		!strings.Contains(strings.Join(got.Webhooks[0].NamespaceSelector.MatchExpressions[1].Values, ","), "legacy") {
		t.Errorf("values injector.failurePolicy/excludeNamespaces not applied: %+v", got.Webhooks[0])
	}
	// Images, trust domain, resolver and log format reach the containers.
	all, _ := json.Marshal(render(t, map[string]any{"image": map[string]any{"registry": "registry.example/mesh", "tag": "v7"},
		"trustDomain": "prod.example", "logFormat": "text", "sidecar": map[string]any{"resolver": "xds"}}))
	for _, s := range []string{"registry.example/mesh/sentry:v7", "registry.example/mesh/controlplane:v7", "--sidecar-image=registry.example/mesh/meshd:v7",
		"--trust-domain=prod.example", "--log-format=text", "--sidecar-resolver=xds"} {
		if !strings.Contains(string(all), s) {
			t.Errorf("rendered chart lacks %q", s)
		}
	}
}

func ptr[T any](v T) *T { return &v }
