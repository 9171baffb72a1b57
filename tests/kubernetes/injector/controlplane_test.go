package injector_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshd/meshd/kube/appservices"
	"github.com/meshd/meshd/kube/injector"
	"github.com/meshd/meshd/kube/policysource"
	"github.com/meshd/meshd/tests/harness"
)

// TestControlPlaneBinary: cmd/controlplane with its Kubernetes flags
// serves the injector with its sentry certificate, writes sentry's bundle
// into the webhook configuration's caBundle, keeps the app Services and
// writes the policy ConfigMaps into the policy directory it serves.
func TestControlPlaneBinary(t *testing.T) {
	k := harness.StartKube(t)
	cs := k.Client()
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "", "--server-name", system+"/controlplane=127.0.0.1")
	ctx := context.Background()
	for _, ns := range []string{shop, system} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	port := harness.FreePort(t)
	wh := injector.WebhookConfiguration(injector.Webhook{Name: "meshd-injector",
		URL: "https://127.0.0.1:" + strconv.Itoa(port) + injector.Path, ExcludeNamespaces: []string{system}})
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, wh, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	static := filepath.Join(t.TempDir(), "static.yaml")
	if err := os.WriteFile(static, []byte("apps: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	policyDir := filepath.Join(t.TempDir(), "policy")
	harness.StartControlPlane(t, b, s, "--resolver", "static", "--resolver-config", static,
		"--kubeconfig", k.Kubeconfig, "--injector-listen", "127.0.0.1:"+strconv.Itoa(port), "--injector-webhook", "meshd-injector",
		"--sidecar-image", "registry.example/meshd:cp", "--app-services", "--policy-source", "kubernetes", "--policy-dir", policyDir)

	bundle, err := os.ReadFile(s.BundleFile())
	if err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, 20*time.Second, func(ctx context.Context) error {
		w, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "meshd-injector", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !bytes.Equal(w.Webhooks[0].ClientConfig.CABundle, bundle) {
			return errors.New("the caBundle is not sentry's bundle yet")
		}
		return nil
	})
	var p *corev1.Pod
	n := 0
	harness.WaitFor(t, 30*time.Second, func(ctx context.Context) error {
		n++
		var err error
		p, err = cs.CoreV1().Pods(shop).Create(ctx, pod(shop, "orders-"+strconv.Itoa(n), meshdAnn("orders")), metav1.CreateOptions{})
		if err != nil {
			return err
		}
		if !injector.Injected(p) {
			return errors.New("not injected yet")
		}
		return nil
	})
	if c := sidecarOf(t, p); c.Image != "registry.example/meshd:cp" {
		t.Errorf("sidecar image %q, want --sidecar-image", c.Image)
	}
	harness.WaitFor(t, 20*time.Second, func(ctx context.Context) error {
		_, err := cs.CoreV1().Services(shop).Get(ctx, appservices.ServiceName("orders"), metav1.GetOptions{})
		return err
	})
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: shop, Labels: map[string]string{policysource.Label: "true"}},
		Data: map[string]string{"a.rego": "package mesh.authz\n\nallow := true\n"}}
	if _, err := cs.CoreV1().ConfigMaps(shop).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, 20*time.Second, func(context.Context) error {
		_, err := os.Stat(filepath.Join(policyDir, shop, "p.a.rego"))
		return err
	})
}
